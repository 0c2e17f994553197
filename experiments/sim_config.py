"""What the simulator needs from a deployment: pools of simulated replicas and SLOs.

``SimSetup`` is built from the project's config file (``orchestrator.config``):
each pool gives ``initial_replicas`` (or ``min_replicas``) replicas of
``model.perf_model`` on its ``accelerator`` at ``tp_size``; engine settings come
from ``model`` and the pool's ``engine_overrides`` (``max_num_seqs``,
``max_num_batched_tokens``, ``gpu_memory_utilization``, ``num_blocks``,
``max_model_len``, ``perf_model``, ``profile``: a ``cascade profile`` CSV, required
for accelerators without a vidur profile such as CPU; ``kv_eviction``, default
``model.kv_eviction``). The SLOs are the file's
classes (``policies.slo.SloConfig``): a request's class comes from its prompt
length as the gateway classes it, and SLO attainment uses its class's targets.
``max_model_len`` is applied only when a pool sets it: the traces'
prompts exceed Llama-2's 4k context, and the simulator is about scheduling, not
about which model served them.

Two deployment effects outside the step profile are options of the setup,
off unless set (``cascade bench fidelity`` measures and sets them): a pool's
``step_overhead_s`` (seconds added to every engine step: the serving path's
per-step cost, ``replicas.step_time``) and the setup's ``core_sharing``
(engines that share CPU cores stretch each other's steps,
``replicas.core_sharing``).

Failure modes: ``ValueError`` naming the pool key (``pools[i].replicas``, an
unknown accelerator or model, weights that do not fit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.slo import SloConfig
from replicas.core_sharing import CoreSharing
from replicas.engine_model import EngineConfig
from replicas.kv_eviction import EVICTION_POLICIES
from replicas.perf_model import PerfModel, build_perf_model
from replicas.profiles import gpu_spec, kv_blocks, model_shape


@dataclass(frozen=True, slots=True)
class PoolSetup:
    """One pool of identical simulated replicas."""

    name: str
    accelerator: str  # "H100", "A100", ...
    replicas: int
    model: str = "llama-2-7b"
    tp: int = 1
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    gpu_memory_utilization: float = 0.9
    num_blocks: int | None = None  # default: from GPU memory and the model
    max_model_len: int | None = None
    profile: str | None = None  # measured profile CSV (cascade profile)
    prefill_tpot_slo_s: float | None = None  # slo_slack prefill budget (None: fixed)
    prefill_min_tokens: int = 64
    kv_eviction: str = "lru"  # replicas.kv_eviction registry name
    block_size: int = 16  # KV block (tokens)
    prefix_unit_tokens: int = 512  # tokens per prefix hash (Mooncake's hash_ids: 512)
    step_overhead_s: float = 0.0  # added to every step (EngineConfig.step_overhead_s)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"pool {self.name!r}: replicas must be >= 1, got {self.replicas}")
        if self.tp < 1:
            raise ValueError(f"pool {self.name!r}: tp must be >= 1")
        if self.kv_eviction not in EVICTION_POLICIES:
            known = ", ".join(sorted(EVICTION_POLICIES))
            raise ValueError(
                f"pool {self.name!r}: unknown KV eviction policy {self.kv_eviction!r}; "
                f"known: {known}"
            )

    @property
    def gpus(self) -> int:
        return self.replicas * self.tp

    def perf_model(self) -> PerfModel:
        try:
            return build_perf_model(self.model, self.accelerator, self.tp, self.profile)
        except ValueError as exc:
            raise ValueError(f"pool {self.name!r}: {exc}") from None

    def engine_config(self) -> EngineConfig:
        blocks = self.num_blocks
        if blocks is None:
            try:
                blocks = kv_blocks(
                    model_shape(self.model),
                    gpu_spec(self.accelerator),
                    self.tp,
                    gpu_memory_utilization=self.gpu_memory_utilization,
                    block_size=self.block_size,
                )
            except ValueError as exc:
                raise ValueError(f"pool {self.name!r}: {exc}") from None
        return EngineConfig(
            num_blocks=blocks,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_model_len=self.max_model_len,
            fold_interval_s=2.0,
            prefill_tpot_slo_s=self.prefill_tpot_slo_s,
            prefill_min_tokens=self.prefill_min_tokens,
            kv_eviction=self.kv_eviction,
            block_size=self.block_size,
            prefix_unit_tokens=self.prefix_unit_tokens,
            step_overhead_s=self.step_overhead_s,
        )


@dataclass(frozen=True)
class SimSetup:
    """Pools, SLOs and loop periods of one simulated deployment."""

    pools: tuple[PoolSetup, ...]
    slos: SloConfig = field(default_factory=SloConfig)
    snapshot_period_s: float = 0.25
    controller_period_s: float = 5.0
    window_s: float = 60.0
    source: str = "<built-in>"
    core_sharing: CoreSharing | None = None  # engines sharing CPU cores (None: each alone)

    def __post_init__(self) -> None:
        if not self.pools:
            raise ValueError(f"{self.source}: pools: at least one pool is required")
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.source}: pools: names must be unique, got {names}")

    @property
    def replicas(self) -> int:
        return sum(p.replicas for p in self.pools)

    @property
    def gpus(self) -> int:
        return sum(p.gpus for p in self.pools)

    def with_replicas(self, per_pool: int) -> SimSetup:
        """The same pools with ``per_pool`` replicas each (benchmarks, scaling runs)."""
        from dataclasses import replace

        return replace(self, pools=tuple(replace(p, replicas=per_pool) for p in self.pools))


def default_setup() -> SimSetup:
    """The built-in heterogeneous cluster: 8 H100 + 8 A100 replicas of Llama-2-7B."""
    return SimSetup(
        pools=(
            PoolSetup("llm-h100", "H100", 8),
            PoolSetup("llm-a100", "A100", 8),
        )
    )


_OVERRIDES = {
    "max_num_seqs": int,
    "max_num_batched_tokens": int,
    "gpu_memory_utilization": float,
    "num_blocks": int,
    "max_model_len": int,
    "perf_model": str,
    "profile": str,
    "kv_eviction": str,
}


def setup_from_config(cfg: Any, source: str = "<config>") -> SimSetup:
    """Build a ``SimSetup`` from a validated ``orchestrator.config.CascadeConfig``."""
    pools = []
    for i, p in enumerate(cfg.pools):
        where = f"{source}: pools[{i}]"
        n = p.start_replicas if p.start_replicas > 0 else p.max_replicas
        if n < 1:
            raise ValueError(f"{where}.replicas: pool {p.name!r} has no replicas")
        kw: dict[str, Any] = {}
        for key, val in dict(p.engine_overrides).items():
            if key in _OVERRIDES:
                try:
                    kw[key] = _OVERRIDES[key](val)
                except (TypeError, ValueError):
                    raise ValueError(f"{where}.engine_overrides.{key}: bad value {val!r}") from None
        model = kw.pop("perf_model", cfg.model.perf_model)
        try:
            pools.append(
                PoolSetup(
                    name=p.name,
                    accelerator=p.accelerator,
                    replicas=n,
                    model=model,
                    tp=p.tp_size,
                    max_num_seqs=kw.pop("max_num_seqs", cfg.model.max_num_seqs),
                    max_num_batched_tokens=kw.pop(
                        "max_num_batched_tokens", cfg.model.max_num_batched_tokens
                    ),
                    gpu_memory_utilization=kw.pop(
                        "gpu_memory_utilization", cfg.model.gpu_memory_utilization
                    ),
                    prefill_tpot_slo_s=cfg.prefill_tpot_s(),
                    prefill_min_tokens=cfg.model.prefill_min_tokens,
                    kv_eviction=kw.pop("kv_eviction", cfg.model.kv_eviction),
                    **kw,
                )
            )
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    loops = cfg.loops
    return SimSetup(
        pools=tuple(pools),
        slos=cfg.slos,
        snapshot_period_s=loops.snapshot_period_s,
        controller_period_s=loops.routing_period_s,
        source=source,
    )


def load_setup(path: str | Path | None = None) -> SimSetup:
    """The setup of a config file; without a path the default example when it
    exists (``orchestrator.config.DEFAULT_CONFIG``), else ``default_setup()``."""
    from orchestrator import config as oc

    if path is None:
        default = Path(oc.DEFAULT_CONFIG)
        if not default.is_file():
            return default_setup()
        path = default
    cfg = oc.load_config(path)
    return setup_from_config(cfg, str(path))
