"""Engine settings of the simulated replica (vLLM's names), a frozen dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass

from replicas.kv_eviction import EVICTION_POLICIES


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine settings (vLLM names). ``num_blocks`` is per replica (from GPU memory;
    see ``replicas.profiles.kv_blocks``). ``prefix_unit_tokens``: tokens covered by
    one prefix hash. ``recent_halflife``: samples behind the snapshot's decayed
    read-outs. ``max_advertised_prefixes``: cap on ``cached_prefix_hashes``.
    ``fold_interval_s``: pending latency samples are folded into the decayed
    estimators at most this often (0 = at every snapshot; the simulator uses 2 s
    for speed: counts and KV stay exact, latency read-outs lag by at most that;
    per-request metrics by up to 5× that when fewer than 16 samples are pending).
    ``prefill_tpot_slo_s``: set, each step's prefill tokens come from the running
    decodes' TPOT slack against it (``replicas.prefill_budget``, floor
    ``prefill_min_tokens``); None, vLLM's fixed budget. ``kv_eviction``: which
    cached prefix unit goes first when blocks run out, a ``replicas.kv_eviction``
    registry name (``lru`` as vLLM, or ``reuse``). ``step_overhead_s``: seconds
added to every step's drawn duration (the serving path's per-step cost that an
engine profile does not contain; ``replicas.step_time``); 0 = the profile alone."""

    num_blocks: int
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    enable_prefix_caching: bool = True
    prefix_unit_tokens: int = 512
    max_model_len: int | None = None
    recent_halflife: float = 200.0
    max_advertised_prefixes: int = 1024
    fold_interval_s: float = 0.0  # fold latency samples into estimators at most this often
    # per-step prefill budget from the decodes' TPOT slack (replicas.prefill_budget);
    # None: vLLM's fixed budget (max_num_batched_tokens for prefill and decode alike)
    prefill_tpot_slo_s: float | None = None
    prefill_min_tokens: int = 64
    kv_eviction: str = "lru"
    step_overhead_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("num_blocks", "block_size", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"engine config: {name} must be >= 1")
        if not (self.step_overhead_s >= 0 and math.isfinite(self.step_overhead_s)):
            raise ValueError(
                f"engine config: step_overhead_s must be a finite number of seconds >= 0, "
                f"got {self.step_overhead_s}"
            )
        if self.prefix_unit_tokens % self.block_size:
            raise ValueError("engine config: prefix_unit_tokens must be a multiple of block_size")
        if self.kv_eviction not in EVICTION_POLICIES:
            known = ", ".join(sorted(EVICTION_POLICIES))
            raise ValueError(
                f"engine config: kv_eviction {self.kv_eviction!r} is not a known policy ({known})"
            )
