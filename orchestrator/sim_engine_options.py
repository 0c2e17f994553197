"""The settings of one pool's simulated engine (``SimLLMEngine``) from the config file (pure).

``sim_engine_options(cfg, pool, time_scale)`` is the plain dict the Ray app binds
into ``SimLLMEngine`` (``engine_kwargs["cascade_sim"]``, read back by
``replicas.sim_options.sim_engine_config``). It takes the same settings, by the
same rules, as the DES simulator's pools (``experiments.sim_config``): ``model``
with the pool's ``engine_overrides`` on top, and the ``slo_slack`` prefill
budget's TPOT target from ``CascadeConfig.prefill_tpot_s`` (None: ``fixed``).
"""

from __future__ import annotations

from typing import Any

from orchestrator.config import CascadeConfig, PoolConfig


def sim_engine_options(cfg: CascadeConfig, pool: PoolConfig, time_scale: float) -> dict[str, Any]:
    """``SimLLMEngine``'s settings for ``pool`` (see the module docstring);
    ``time_scale`` multiplies the engine's sleeps (< 1: faster than real time)."""
    over = dict(pool.engine_overrides)
    return {
        "pool": pool.name,
        "accelerator": pool.accelerator,
        "tp": pool.tp_size,
        "perf_model": over.get("perf_model", cfg.model.perf_model),
        "max_num_seqs": over.get("max_num_seqs", cfg.model.max_num_seqs),
        "max_num_batched_tokens": over.get(
            "max_num_batched_tokens", cfg.model.max_num_batched_tokens
        ),
        "gpu_memory_utilization": over.get(
            "gpu_memory_utilization", cfg.model.gpu_memory_utilization
        ),
        "num_blocks": over.get("num_blocks"),
        "max_model_len": over.get("max_model_len", cfg.model.max_model_len),
        "kv_eviction": over.get("kv_eviction", cfg.model.kv_eviction),
        "prefill_tpot_slo_s": cfg.prefill_tpot_s(),
        "prefill_min_tokens": cfg.model.prefill_min_tokens,
        "time_scale": time_scale,
    }
