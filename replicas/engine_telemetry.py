"""Latency samples of the engine model, folded lazily into estimators.

The scheduler appends raw samples to the pending buffers on its hot path
(queue wait, TTFT, step and prefill-step times, E2E; inter-token latencies as
(value, count) runs, since a whole batch shares one step's ITL; prefill seconds
per token). ``fold`` moves them into decayed estimators (the snapshot's
``recent`` read-outs, what routers act on) and, for full snapshots, into the
mergeable summaries the controller merges replica → pool → cluster.

With a ``fold_interval_s`` (the DES), the per-request metrics (a few samples per
interval) wait until ``_SPARSE_BATCH`` samples are pending or ``_SPARSE_LAG``
intervals passed: a fold costs ~50 µs whatever its size, and a handful of samples
moves a read-out of half-life ``recent_halflife`` samples by a few % at most.
"""

from __future__ import annotations

import math

import numpy as np

from replicas.telemetry import (
    E2E,
    ITL,
    PREFILL_STEP,
    QUEUE_WAIT,
    STEP,
    TTFT,
    DecayedStats,
    ReplicaSnapshot,
)
from uncertainty import DecayedWelford, Summary

_SPARSE_BATCH = 16  # per-request metrics fold once this many samples are pending,
_SPARSE_LAG = 5  # or after this many fold intervals
_METRICS = (QUEUE_WAIT, TTFT, ITL, STEP, PREFILL_STEP, E2E)


class EngineTelemetry:
    """Pending samples, their estimators, and the last fast-path snapshot.

    ``pending[m]`` (m in queue wait, TTFT, step, prefill step, E2E), ``itl_v`` /
    ``itl_n`` (ITL values and how many sequences each covers) and ``pstp``
    (prefill seconds per token) are appended to by the scheduler.
    ``cached_snapshot`` / ``cached_key``: the last ``full=False`` snapshot and the
    engine state it showed (the engine model re-stamps it while that is unchanged).
    """

    def __init__(self, recent_halflife: float, fold_interval_s: float) -> None:
        self.fold_interval_s = fold_interval_s
        self.pending: dict[str, list[float]] = {
            m: [] for m in (QUEUE_WAIT, TTFT, STEP, PREFILL_STEP, E2E)
        }
        self.itl_v: list[float] = []
        self.itl_n: list[int] = []
        self.pstp: list[float] = []
        h = recent_halflife
        self._recent = {m: DecayedWelford(halflife_samples=h) for m in _METRICS}
        self._recent_pstp = DecayedWelford(halflife_samples=h)
        self._summaries = {m: Summary() for m in _METRICS}
        self._recent_stats: dict[str, DecayedStats] | None = None
        self._fold_t = -math.inf
        self._sparse_fold_t = -math.inf  # last fold of the sparse metrics
        self.cached_snapshot: ReplicaSnapshot | None = None
        self.cached_key: tuple[int, ...] = ()

    def has_pending(self) -> bool:
        return bool(self.itl_v or self.pstp or any(self.pending.values()))

    def fold_due(self, now_s: float, full: bool) -> bool:
        """Whether a snapshot at ``now_s`` folds the pending samples: always for a
        full one; else once ``fold_interval_s`` passed and something is pending."""
        fold = full or now_s - self._fold_t >= self.fold_interval_s
        if fold and not full and not self.has_pending():
            self._fold_t = now_s  # nothing to fold in: the read-outs are unchanged
            return False
        return fold

    def fold(self, full: bool, now_s: float) -> None:
        """Fold pending samples into the decayed estimators (and, when ``full``,
        the summaries); the sparse per-request metrics may wait (module docstring)."""
        self._fold(full, now_s)
        self._fold_t = now_s

    def _fold(self, full: bool, now_s: float) -> None:
        if not self.has_pending():
            return
        self._recent_stats = None
        interval = self.fold_interval_s
        sparse_due = full or interval <= 0 or now_s - self._sparse_fold_t >= _SPARSE_LAG * interval
        if sparse_due:
            self._sparse_fold_t = now_s
        for metric, vals in self.pending.items():
            if vals and (sparse_due or len(vals) >= _SPARSE_BATCH):
                self._recent[metric].update(vals)
                if full:
                    self._summaries[metric].update(vals)
                vals.clear()
        if self.itl_v:
            x = np.repeat(np.asarray(self.itl_v), np.asarray(self.itl_n))
            self._recent[ITL].update(x)
            if full:
                self._summaries[ITL].update(x)
            self.itl_v.clear()
            self.itl_n.clear()
        if self.pstp and (sparse_due or len(self.pstp) >= _SPARSE_BATCH):
            self._recent_pstp.update(self.pstp)
            self.pstp.clear()

    def recent(self) -> dict[str, DecayedStats]:
        """Decayed read-outs of the metrics seen so far (cached until the next fold)."""
        recent = self._recent_stats
        if recent is None:  # read-outs change only when samples are folded in
            recent = self._recent_stats = {
                k: DecayedStats(est.mean, est.std, est.n_eff, est.autocorr)
                for k, est in self._recent.items()
                if est.count
            }
        return recent

    def prefill_s_per_token(self, default: float) -> float:
        """Recent mean prefill seconds per prompt token (``default`` before any)."""
        return self._recent_pstp.mean if self._recent_pstp.count else default

    def summaries(self) -> dict[str, Summary]:
        """Copies of the non-empty mergeable summaries."""
        return {k: s.copy() for k, s in self._summaries.items() if s.n}
