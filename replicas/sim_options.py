"""``SimLLMEngine``'s settings (a plain dict) read into the engine model's config (pure).

``SimLLMEngine`` takes its settings from ``llm_config.engine_kwargs["cascade_sim"]``
(``orchestrator.sim_engine_options`` writes them from the config file). This module
turns them into the ``EngineConfig`` of the engine model, so the Ray tier's
simulated replicas schedule exactly as the DES simulator's
(``experiments.sim_config.PoolSetup.engine_config``): the same ``EngineConfig``
fields, among them ``prefill_tpot_slo_s`` (``model.prefill_budget: slo_slack``:
each step's prefill tokens from the running decodes' TPOT slack,
``replicas.prefill_budget``; absent or None: vLLM's fixed budget).

Keys read (defaults as vLLM's): ``perf_model`` (``llama-2-7b``), ``accelerator``
(``H100``), ``tp`` (1), ``num_blocks`` (default: from GPU memory and the model),
``gpu_memory_utilization`` (0.9), ``max_num_seqs`` (256), ``max_num_batched_tokens``
(8192), ``max_model_len`` (None), ``kv_eviction`` (``lru``), ``prefill_tpot_slo_s``
(None, seconds), ``prefill_min_tokens`` (64). ``SimLLMEngine`` reads the rest
(``time_scale``, ``seed``, ``pool``, ``replica_id``, ``profile``).

Failure modes: ``ValueError`` naming the key for a value of the wrong type or out
of range (``engine_kwargs.cascade_sim.<key>: ...``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from replicas.engine_config import EngineConfig
from replicas.profiles import gpu_spec, kv_blocks, model_shape

WHERE = "engine_kwargs.cascade_sim"


def _opt_int(opts: Mapping[str, Any], key: str) -> int | None:
    value = opts.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{WHERE}.{key}: expected an integer, got {value!r}") from None


def _int(opts: Mapping[str, Any], key: str, default: int) -> int:
    value = _opt_int(opts, key)
    return default if value is None else value


def _slo(opts: Mapping[str, Any]) -> float | None:
    value = opts.get("prefill_tpot_slo_s")
    if value is None:
        return None
    try:
        slo = float(value)
    except (TypeError, ValueError):
        slo = math.nan
    if not (slo > 0 and math.isfinite(slo)):
        raise ValueError(f"{WHERE}.prefill_tpot_slo_s: expected seconds > 0, got {value!r}")
    return slo


def sim_engine_config(opts: Mapping[str, Any]) -> EngineConfig:
    """The ``EngineConfig`` of ``SimLLMEngine``'s settings (module docstring)."""
    model = str(opts.get("perf_model", "llama-2-7b"))
    accel = str(opts.get("accelerator", "H100"))
    blocks = _opt_int(opts, "num_blocks")
    if blocks is None:
        blocks = kv_blocks(
            model_shape(model),
            gpu_spec(accel),
            _int(opts, "tp", 1),
            gpu_memory_utilization=float(opts.get("gpu_memory_utilization", 0.9)),
        )
    try:
        return EngineConfig(
            num_blocks=blocks,
            max_num_seqs=_int(opts, "max_num_seqs", 256),
            max_num_batched_tokens=_int(opts, "max_num_batched_tokens", 8192),
            max_model_len=_opt_int(opts, "max_model_len"),
            kv_eviction=str(opts.get("kv_eviction", "lru")),
            prefill_tpot_slo_s=_slo(opts),
            prefill_min_tokens=_int(opts, "prefill_min_tokens", 64),
        )
    except ValueError as exc:
        raise ValueError(f"{WHERE}: {exc}") from None
