"""The controller core's monitor: replica → pool → cluster (pure).

``Monitor.ingest(now_s, snapshots)`` keeps the newest snapshot per replica,
ignores older duplicates, rejects snapshots of unknown pools and malformed ones
(``snapshot_problem``: not a snapshot, NaN / negative / inconsistent fields, a
time in the future; counted in ``rejected`` and ``rejected_reasons``), drops
replicas whose latest snapshot is staler than ``stale_after_s`` (a dead replica
stops counting), estimates each replica's completion rate from its cumulative
``completed`` counter, and merges the snapshots' latency summaries exactly
(``uncertainty.Hierarchy``). ``Monitor.view(now_s, cascade)`` is the ``ClusterView`` the controller
publishes; merged statistics are recomputed at most every ``MERGE_PERIOD_S``
(or when forced, before a solve): routers act on snapshots, not on these, and a
full re-merge of 1,000 replicas costs ~0.1 s.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from orchestrator.contracts import ClusterView, LevelStats, PoolView
from orchestrator.estimates import mean_recent
from replicas.telemetry import E2E, ITL, METRICS, PREFILL_STEP, TTFT, ReplicaSnapshot
from uncertainty import CascadeCoefficients, Hierarchy, Summary

_QS = (0.5, 0.9, 0.99)
MERGE_PERIOD_S = 1.0
FUTURE_SKEW_S = 5.0  # a snapshot stamped later than now + this is rejected (clock skew)


def snapshot_problem(snap: object, now_s: float, pools: frozenset[str] | set[str]) -> str | None:
    """Why ``snap`` must not be folded in (a short reason), or None if it is sound.

    A snapshot that arrived over Ray was unpickled without running
    ``ReplicaSnapshot.__post_init__``, so its checks are re-run here, plus what
    they do not cover: decayed stats with a negative spread, a batch with negative
    counts or a heterogeneity below 1 or NaN, summaries that are not summaries or
    have a NaN mean, and a time in the future (such a snapshot would never go stale
    and would shadow every real one of its replica)."""
    if not isinstance(snap, ReplicaSnapshot):
        return "not a snapshot"
    if snap.pool not in pools:
        return "unknown pool"
    try:
        snap.__post_init__()  # NaN / negative counters / kv_used outside [0, total]
    except (ValueError, TypeError):
        return "invalid field"
    if snap.time_s > now_s + FUTURE_SKEW_S:
        return "time in the future"
    b = snap.batch
    if not (b.prefill_tokens >= 0 and b.decode_seqs >= 0 and b.heterogeneity >= 1.0):
        return "inconsistent batch"  # NaN fails the comparisons too
    if not math.isfinite(b.heterogeneity):
        return "inconsistent batch"
    if any(st.std < 0 or st.n_eff < 0 or st.mean < 0 for st in snap.recent.values()):
        return "negative recent stats"
    for summary in snap.summaries.values():
        if not isinstance(summary, Summary) or (summary.n and not math.isfinite(summary.mean)):
            return "invalid summary"
    return None


def _level(s: Summary) -> LevelStats:
    if s.n == 0:
        return LevelStats(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    p50, p90, p99 = (float(v) for v in s.quantiles(_QS))
    return LevelStats(s.n, s.mean, s.std, p50, p90, p99)


class Monitor:
    """See the module docstring. ``pools``: the configured pool names."""

    def __init__(self, pools: Sequence[str], stale_after_s: float) -> None:
        self.pools = list(pools)
        self.stale_after_s = stale_after_s
        self.latest: dict[str, ReplicaSnapshot] = {}
        self.hier: dict[str, Hierarchy] = {m: Hierarchy() for m in METRICS}
        self.rates: dict[str, float] = {}  # replica -> completions/s (last interval)
        self.rejected = 0  # snapshots of unknown pools or malformed (snapshot_problem)
        self.rejected_reasons: Counter[str] = Counter()
        self.stale: tuple[str, ...] = ()  # replicas dropped as stale at the last ingest
        self._merged_t = -math.inf
        self._pool_metrics: dict[str, dict[str, LevelStats]] = {}
        self._cluster_metrics: dict[str, LevelStats] = {}

    def ingest(self, now_s: float, snapshots: Sequence[ReplicaSnapshot]) -> list[ReplicaSnapshot]:
        """Fold ``snapshots`` in; returns the new ones (newer than held)."""
        pools = set(self.pools)
        fresh: list[ReplicaSnapshot] = []
        for snap in snapshots:
            problem = snapshot_problem(snap, now_s, pools)
            if problem is not None or not isinstance(snap, ReplicaSnapshot):
                self.rejected += 1
                self.rejected_reasons[problem or "not a snapshot"] += 1
                continue
            prev = self.latest.get(snap.replica_id)
            if prev is not None and snap.time_s <= prev.time_s:
                continue
            if prev is not None:
                dt = snap.time_s - prev.time_s
                self.rates[snap.replica_id] = max(snap.completed - prev.completed, 0) / dt
            self.latest[snap.replica_id] = snap
            fresh.append(snap)
        stale = []
        for rid, snap in list(self.latest.items()):
            if now_s - snap.time_s > self.stale_after_s:
                stale.append(rid)
                del self.latest[rid]
                self.rates.pop(rid, None)
                for h in self.hier.values():
                    h.remove((snap.pool, rid))
        self.stale = tuple(stale)
        for snap in fresh:
            if snap.replica_id not in self.latest:
                continue
            for metric, summary in snap.summaries.items():
                if metric in self.hier and summary.n:
                    # snapshots are immutable by contract: no copy
                    self.hier[metric].put((snap.pool, snap.replica_id), summary, copy=False)
        return fresh

    def completion_rate(self) -> float:
        """Requests/s completing across the cluster, from the replicas' cumulative
        ``completed`` counters between their last two snapshots (>= 1e-3)."""
        return max(sum(self.rates.get(r, 0.0) for r in self.latest), 1e-3)

    def mean_output_tokens(self) -> float | None:
        """Mean answer length (tokens) of completed requests, from the merged
        latencies: 1 + (mean E2E − mean TTFT) / mean ITL; None before any."""
        e2e, ttft, itl = (self.hier[m].summary() for m in (E2E, TTFT, ITL))
        if not (e2e.n and ttft.n and itl.n) or not itl.mean > 0:
            return None
        value = 1.0 + max(e2e.mean - ttft.mean, 0.0) / itl.mean
        return value if math.isfinite(value) else None

    def view(
        self, now_s: float, cascade: CascadeCoefficients, *, merge: bool = False
    ) -> ClusterView:
        """The cluster as of ``now_s``; ``merge`` forces a re-merge of statistics."""
        by_pool: dict[str, list[ReplicaSnapshot]] = {p: [] for p in self.pools}
        for snap in self.latest.values():
            by_pool[snap.pool].append(snap)
        if merge or now_s - self._merged_t >= MERGE_PERIOD_S:
            self._merged_t = now_s
            self._pool_metrics = {
                name: {
                    m: _level(h.summary((name,)))
                    for m, h in self.hier.items()
                    if name in h.children()
                }
                for name in by_pool
            }
            self._cluster_metrics = {
                m: _level(h.summary()) for m, h in self.hier.items() if h.summary().n
            }
        pools: dict[str, PoolView] = {}
        for name, snaps in by_pool.items():
            pools[name] = PoolView(
                name=name,
                replicas=tuple(sorted(s.replica_id for s in snaps)),
                running=sum(s.running for s in snaps),
                waiting=sum(s.waiting for s in snaps),
                kv_usage=float(np.mean([s.kv_usage for s in snaps])) if snaps else 0.0,
                itl_sigma_s=mean_recent(snaps, ITL, "std"),
                prefill_sigma_s=mean_recent(snaps, PREFILL_STEP, "std"),
                arrival_rate_per_s=sum(self.rates.get(s.replica_id, 0.0) for s in snaps),
                metrics=self._pool_metrics.get(name, {}),
            )
        return ClusterView(
            time_s=now_s,
            pools=pools,
            cluster=self._cluster_metrics,
            cascade=cascade,
            stale_replicas=self.stale,
        )
