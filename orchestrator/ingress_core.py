"""The pure half of the ingress: pick a pool by the Plan, then admit or defer.

For each request: the pool comes from ``PoolSplitter`` on the Plan's weights for
its SLO class (pools with live replicas only; proportional to replicas before
the first Plan). Admission then runs the configured policy on that pool's
replicas (``slo_feasible`` predicts P(meet SLO) with the cascade model), after
the backpressure gate: a pool whose saturation is ≥ 1 holds new prefills, so the
request spills to the best other pool with live replicas that is not held (by
Plan weight); only when every pool is held is it deferred with a ``Retry-After``
estimate. Never raises on telemetry:
an admission policy that fails admits (serving beats refusing on a bug) and is
counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.contracts import Plan, PoolPlan
from policies import AdmissionDecision, PoolSplitter, ReplicaView, build_view
from policies.admission import Admission
from policies.backpressure import BackpressureState
from policies.slo import predict_request
from replicas.telemetry import ReplicaSnapshot, RequestInfo
from uncertainty import CascadeModel

logger = logging.getLogger("cascade.ingress")

HOLD_RETRY_S = 1.0  # backpressure holds re-check at about the controller's pace


def plan_pressure(pp: PoolPlan, pool: str, now_s: float) -> BackpressureState:
    """The Plan's backpressure read-out of one pool, as admission policies take it
    (shared by the Ray ingress and the simulator's Cascade stack)."""
    return BackpressureState(
        pool, now_s, pp.saturation, pp.admission_token_budget, 1.0, 0.0, "hold"
    )


@dataclass(frozen=True, slots=True)
class IngressDecision:
    pool: str
    admission: AdmissionDecision


class IngressCore:
    """Pool split + admission (see module docstring)."""

    def __init__(
        self,
        pools: Sequence[str],
        admission: Admission,
        *,
        rng: np.random.Generator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pools = list(pools)
        self.admission = admission
        self.splitter = PoolSplitter()
        self.rng = rng or np.random.default_rng()
        self.clock = clock
        self.plan: Plan | None = None
        self.snapshots: dict[str, list[ReplicaSnapshot]] = {p: [] for p in self.pools}
        self.rejected = 0
        self.admission_errors = 0
        self.cascade = CascadeModel()
        # views of the current snapshots, one per pool, built at most once per
        # refresh (an O(replicas) Python loop): per request the ingress then does
        # O(1) Python work whatever the replica count
        self._views: dict[str, ReplicaView] = {}

    def update(self, plan: Plan | None, snapshots: Sequence[ReplicaSnapshot]) -> None:
        if plan is not None:
            self.plan = plan
        by_pool: dict[str, list[ReplicaSnapshot]] = {p: [] for p in self.pools}
        for s in snapshots:
            if s.pool in by_pool:
                by_pool[s.pool].append(s)
        self.snapshots = by_pool
        self._views = {}

    def _view(self, pool: str, snaps: Sequence[ReplicaSnapshot]) -> ReplicaView:
        """The pool's view of the current snapshots (cached until ``update``).
        Snapshot ages are as of the first request after a refresh (at most one
        refresh period old)."""
        view = self._views.get(pool)
        if view is None:
            view = self._views[pool] = build_view(snaps, None, self.clock())
        return view

    def choose_pool(self, slo_class: str) -> str:
        live = {p: float(len(s)) for p, s in self.snapshots.items()}
        if not any(live.values()):
            live = {p: 1.0 for p in self.pools}  # no telemetry yet: every pool counts
        weights: Mapping[str, Mapping[str, float]] | None = (
            self.plan.routing if self.plan is not None else None
        )
        try:
            return self.splitter.choose_pool(slo_class, weights, self.rng, available=live)
        except ValueError:
            return self.pools[int(self.rng.integers(len(self.pools)))]

    def decide(
        self, request: RequestInfo, inflight: Mapping[str, int] | None = None
    ) -> IngressDecision:
        pool = self.choose_pool(request.slo_class)
        now = self.clock()
        if self._held(pool):
            pool = self._spill(request.slo_class, pool)
        pp = self.plan.pools.get(pool) if self.plan is not None else None
        if pp is not None and pp.saturation >= 1.0:
            self.rejected += 1
            return IngressDecision(
                pool,
                AdmissionDecision(
                    admit=False,
                    reason=f"backpressure: pool {pool} saturation {pp.saturation:.2f} >= 1",
                    retry_after_s=HOLD_RETRY_S,
                    defer=True,
                ),
            )
        snaps = self.snapshots.get(pool) or []
        if not snaps:
            return IngressDecision(pool, AdmissionDecision(True, "no telemetry yet"))
        pressure = plan_pressure(pp, pool, now) if pp is not None else None
        try:
            view = self._view(pool, snaps) if inflight is None else build_view(snaps, inflight, now)
            decision = self.admission.decide(request, view, now, pressure)
        except Exception:
            self.admission_errors += 1
            logger.exception("admission policy failed; admitting")
            decision = AdmissionDecision(True, "admission policy error: admitted")
        if not decision.admit:
            self.rejected += 1
        return IngressDecision(pool, decision)

    def _held(self, pool: str) -> bool:
        pp = self.plan.pools.get(pool) if self.plan is not None else None
        return pp is not None and pp.saturation >= 1.0

    def _spill(self, slo_class: str, held: str) -> str:
        """The highest-weighted pool that has live replicas and is not held; the
        held pool itself when there is none."""
        weights = self.plan.routing.get(slo_class, {}) if self.plan is not None else {}
        candidates = [
            p for p in self.pools if p != held and self.snapshots.get(p) and not self._held(p)
        ]
        if not candidates:
            return held
        return max(candidates, key=lambda p: weights.get(p, 0.0))

    def predicted_p99(self, request: RequestInfo, pool: str) -> tuple[float, float] | None:
        """Predicted (TTFT, E2E) P99 in seconds of ``request`` on the best replica
        of ``pool`` (the one a latency-aware router would pick); None without
        telemetry. Feeds the coverage metric: ~1% of requests should exceed it."""
        snaps = self.snapshots.get(pool) or []
        if not snaps:
            return None
        try:
            view = self._view(pool, snaps)
            pred = predict_request(self.cascade, view, request, 0.0)
            e2e = pred.e2e_quantile(0.99)
            best = int(np.argmin(e2e))
            return float(pred.ttft_quantile(0.99)[best]), float(e2e[best])
        except Exception:
            return None
