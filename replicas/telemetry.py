"""The contracts between replicas, policies and the controller (frozen dataclasses).

A replica (real vLLM or ``SimEngine``, on Ray or in the simulator) timestamps every
token (``TokenTiming``), folds them into local estimators, and every ~250 ms
publishes a compact ``ReplicaSnapshot``. Routers, admission and the controller
consume snapshots only; they never see engines. ``RequestInfo`` is what a policy
knows about a request before it runs.

Units: seconds for times and latencies, tokens for lengths, fractions in [0, 1].
"""

from __future__ import annotations

import bisect
import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from uncertainty import Summary

# Metric names used in ReplicaSnapshot.summaries / .recent.
QUEUE_WAIT = "queue_wait"  # arrival at the replica → first scheduled (s)
TTFT = "ttft"  # arrival at the replica → first token (s)
ITL = "itl"  # inter-token latency of decode tokens (s)
STEP = "step"  # engine step duration (s)
PREFILL_STEP = "prefill_step"  # duration of steps that carried prefill tokens (s)
E2E = "e2e"  # arrival → last token (s)
METRICS: tuple[str, ...] = (QUEUE_WAIT, TTFT, ITL, STEP, PREFILL_STEP, E2E)

# ``ReplicaSnapshot.generated_hist`` bucket b counts the replica's requests that
# have generated [EDGES[b], EDGES[b + 1]) output tokens (the last bucket is open).
# Log-spaced: output lengths are heavy-tailed, so age matters by its order.
GENERATED_EDGES: tuple[int, ...] = (0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def generated_histogram(generated: Sequence[int]) -> tuple[int, ...]:
    """Counts of ``generated`` (output tokens per ongoing request) per
    ``GENERATED_EDGES`` bucket; a negative count goes to the first bucket."""
    hist = [0] * len(GENERATED_EDGES)
    for g in generated:
        hist[max(bisect.bisect_right(GENERATED_EDGES, g) - 1, 0)] += 1
    return tuple(hist)


class Phase(StrEnum):
    QUEUE = "queue"
    PREFILL = "prefill"
    DECODE = "decode"


@dataclass(frozen=True, slots=True)
class TokenTiming:
    """One event of one request on one replica: ``t_s`` from the injected clock."""

    request_id: str
    replica_id: str
    phase: Phase
    t_s: float
    index: int = 0  # token index within the request's output (decode), else 0


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a policy knows about a request before it runs."""

    request_id: str
    prompt_tokens: int
    max_tokens: int
    predicted_output_tokens: float | None = None  # e.g. from a length predictor
    prefix_hashes: tuple[int, ...] = ()  # block hashes of the prompt (prefix caching)
    slo_class: str = "default"
    arrival_s: float = 0.0

    def __post_init__(self) -> None:
        if self.prompt_tokens < 0:
            raise ValueError(f"request {self.request_id}: prompt_tokens must be >= 0")
        if self.max_tokens < 1:
            raise ValueError(f"request {self.request_id}: max_tokens must be >= 1")
        p = self.predicted_output_tokens
        if p is not None and not (math.isfinite(p) and p >= 0):
            raise ValueError(f"request {self.request_id}: predicted_output_tokens must be >= 0")

    @property
    def expected_output_tokens(self) -> float:
        """Predicted output length if known, else ``max_tokens`` (an upper bound)."""
        p = self.predicted_output_tokens
        return float(self.max_tokens) if p is None else max(1.0, min(p, float(self.max_tokens)))


@dataclass(frozen=True, slots=True)
class DecayedStats:
    """Read-out of a ``DecayedWelford`` (recent behaviour), cheap to ship."""

    mean: float
    std: float
    n_eff: float
    autocorr: float


@dataclass(frozen=True, slots=True)
class BatchComposition:
    """The engine's current batch: prefill tokens scheduled in the last step,
    decode sequences, and heterogeneity h = 1 + CV of context lengths (>= 1)."""

    prefill_tokens: int = 0
    decode_seqs: int = 0
    heterogeneity: float = 1.0


@dataclass(frozen=True, slots=True)
class GpuSample:
    """NVML sample of the replica's GPU(s), averaged over the snapshot period."""

    utilization: float  # fraction of time a kernel ran, [0, 1]
    memory_used_fraction: float
    nvlink_bytes_per_s: float = 0.0
    pcie_bytes_per_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplicaSnapshot:
    """What one replica publishes every ~250 ms.

    ``summaries`` are mergeable summaries of the samples seen since the replica
    started (the controller merges replica → pool → cluster exactly); ``recent``
    are decayed read-outs (the last few seconds) that routers act on.
    """

    replica_id: str
    pool: str
    time_s: float
    accelerator: str = "unknown"
    running: int = 0
    waiting: int = 0
    waiting_prefill_tokens: int = 0  # prompt tokens not yet prefilled, queue included
    kv_blocks_used: int = 0
    kv_blocks_total: int = 1
    block_size: int = 16
    prefix_hit_rate: float = 0.0
    preemptions: int = 0  # cumulative
    completed: int = 0  # cumulative
    prefill_s_per_token: float = 0.0  # recent mean prefill cost per prompt token
    batch: BatchComposition = field(default_factory=BatchComposition)
    summaries: Mapping[str, Summary] = field(default_factory=dict)
    recent: Mapping[str, DecayedStats] = field(default_factory=dict)
    gpu: GpuSample | None = None
    cached_prefix_hashes: frozenset[int] = frozenset()  # bounded by the replica
    # ongoing requests per GENERATED_EDGES bucket of output tokens generated so
    # far; () = not reported (a replica that cannot tell: policies then see no age)
    generated_hist: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kv_blocks_total < 1:
            raise ValueError(f"snapshot {self.replica_id}: kv_blocks_total must be >= 1")
        if not 0 <= self.kv_blocks_used <= self.kv_blocks_total:
            raise ValueError(
                f"snapshot {self.replica_id}: kv_blocks_used={self.kv_blocks_used} "
                f"outside [0, {self.kv_blocks_total}]"
            )
        for name in ("running", "waiting", "waiting_prefill_tokens", "preemptions", "completed"):
            if getattr(self, name) < 0:
                raise ValueError(f"snapshot {self.replica_id}: {name} must be >= 0")
        for name in ("time_s", "prefix_hit_rate", "prefill_s_per_token"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"snapshot {self.replica_id}: {name}={v!r} must be finite, >= 0")
        if self.generated_hist and (
            len(self.generated_hist) != len(GENERATED_EDGES) or min(self.generated_hist) < 0
        ):
            raise ValueError(
                f"snapshot {self.replica_id}: generated_hist must hold "
                f"{len(GENERATED_EDGES)} counts >= 0, got {self.generated_hist!r}"
            )
        for metric, st in self.recent.items():
            if not all(math.isfinite(v) for v in (st.mean, st.std, st.n_eff, st.autocorr)):
                raise ValueError(f"snapshot {self.replica_id}: recent[{metric!r}] has NaN/inf")

    @property
    def kv_usage(self) -> float:
        return self.kv_blocks_used / self.kv_blocks_total

    def at(self, time_s: float) -> ReplicaSnapshot:
        """This snapshot re-stamped at ``time_s``: a new snapshot (this one is
        unchanged). Only ``time_s`` is checked; the other fields are this one's,
        validated when it was built. Why not ``dataclasses.replace``: it re-runs
        ``__post_init__`` over every field, ~14x the cost of this copy (measured
        ~115 vs ~8 us on a loaded 2-core host), and the simulator re-stamps
        unchanged snapshots on its hot path."""
        if not math.isfinite(time_s) or time_s < 0:
            raise ValueError(f"snapshot {self.replica_id}: time_s={time_s!r} must be finite, >= 0")
        fresh = copy.copy(self)
        # the new object is not shared yet: set its field as a frozen __init__ does
        object.__setattr__(fresh, "time_s", time_s)
        return fresh
