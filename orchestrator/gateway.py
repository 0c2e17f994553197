"""The gateway: every request's decision, in one pure object.

For each request, in this order (docs/policies.md, "The gateway"):

1. **class**: ``SloConfig.classify`` — an explicit class (the ``x-cascade-class``
   header or the ``cascade_class`` body field at the Ray ingress) if it is a
   configured one, else by prompt length (``max_prompt_tokens``), else the
   configured ``default_class``;
2. **pool**: drawn from the Plan's weights for the class (the default class's
   weights for a class the Plan does not list; proportional to live replicas
   before the first Plan or when no weighted pool is live);
3. **backpressure**: a pool whose Plan saturation is >= 1 holds new prefills, so
   the request spills to the live, not-held pool with the highest weight for its
   class. It never sheds by itself (issue 14 §3): with every live pool held the
   request stays on its pool (``held_all``) and admission alone decides;
4. **admission**: the configured policy on the pool's replicas (with in-flight
   counts when this gateway also routes), its backpressure read-out and the
   SLOs; refused there, the other live pools are tried (not held first, then by
   weight) and the request is shed only if none admits it. A policy that
   raises admits (serving beats refusing on a bug), counted;
5. **replica ranking**: the configured router on the pool's replicas; a router
   that raises or filters every replica out falls back to least-outstanding
   (counted) — a request is never dropped for want of a ranking.

The Ray ingress runs 1–4 (``decide``), the pool's Serve router 5 (``rank``, via
``RoutingCore``), the simulator both (``route``, virtual clock): one class, one
config (``from_config``), fed alike off the request path (``sync`` / ``set_plan``
/ ``set_snapshots`` / ``set_cascade_model``). Views are built once per snapshot
refresh and refreshed per request with in-flight counts only: O(1) Python calls
per request. Per-class arrivals: ``take_arrivals``. Predictions
(``orchestrator.predictions``): ``route`` and ``predict_for`` predict TTFT / TPOT /
E2E quantiles for the replica chosen; ``on_completed`` scores them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from orchestrator.calibration import Outcome
from orchestrator.contracts import Plan, PoolPlan, RouterSync
from orchestrator.estimates import ArrivalTally
from orchestrator.gateway_predictions import GatewayPredictions
from orchestrator.gateway_types import (
    GatewayDecision,
    PredictionInputs,
    RouterLike,
    least_outstanding_order,
    plan_pressure,
)
from orchestrator.predictions import GatewayPredictor
from policies import AdmissionDecision, PoolSplitter, ReplicaView, build_policies, build_view
from policies.admission import Admission
from policies.slo import SloConfig
from replicas.telemetry import ReplicaSnapshot, RequestInfo
from uncertainty import CascadeModel
from uncertainty.output_length import OutputLengthModel

if TYPE_CHECKING:
    from orchestrator.config import CascadeConfig

logger = logging.getLogger("cascade.gateway")

ALL_POOLS = ""  # the pool key of a gateway without pools (one deployment of every replica)
ADMITTED = AdmissionDecision(True, "admitted")


class Gateway(GatewayPredictions):
    """See the module docstring.

    Args:
        pools: pool names; None: one deployment of every replica (no split, no
            holds: a stock Ray Serve deployment, the simulator's baselines).
        slos: the SLO classes (default: one ``default`` class).
        router: ranks a pool's replicas (None: ``rank`` is least-outstanding).
        admission: None admits everything.
        rng, clock: injected (the simulator passes a seeded generator and its
            virtual clock).
    """

    def __init__(
        self,
        pools: Sequence[str] | None = None,
        *,
        slos: SloConfig | None = None,
        router: RouterLike | None = None,
        admission: Admission | None = None,
        rng: np.random.Generator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pools = list(pools) if pools is not None else [ALL_POOLS]
        self._split = pools is not None
        self.slos = slos or SloConfig()
        self.router = router
        self.admission = admission
        self.rng = rng or np.random.default_rng()
        self.clock = clock
        self.splitter = PoolSplitter()
        self.plan: Plan | None = None
        self.cascade = CascadeModel()  # the prior until the controller's fit arrives
        self._cascade_state: object = None
        self.synced_s = -float("inf")  # controller time of the last sync
        self.snapshots: dict[str, list[ReplicaSnapshot]] = {p: [] for p in self.pools}
        self._live: dict[str, float] = dict.fromkeys(self.pools, 1.0)
        # one view per pool, built at the first request after a snapshot refresh,
        # then refreshed per request with in-flight counts (with_outstanding)
        self._views: dict[str, ReplicaView] = {}
        # cumulative counters; held_all: decisions taken with every live pool held
        self.decisions = self.rejected = self.deferred = self.spilled = self.held_all = 0
        self.admission_errors = self.rank_fallbacks = 0
        self.arrivals = ArrivalTally()
        # learned output lengths; predictions logged until their outcome
        self.predictor = GatewayPredictor()
        # Requests carry their predicted length into routing only when set. Off:
        # it lost issue 14 grid cells (docs/benchmarks.md); the expected_slo
        # policies get the learned mean length instead (_push_running_length).
        self.route_on_predicted_lengths = False
        self._logged: set[str] = set()

    @classmethod
    def from_config(
        cls,
        config: CascadeConfig,
        *,
        router: RouterLike | None = None,
        rng: np.random.Generator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Gateway:
        """The gateway of a deployment file: its pools, SLO classes, router (unless
        ``router`` is given), admission (with the configured SLOs)."""
        pol = build_policies(config.policy_config())
        return cls(
            [p.name for p in config.pools],
            slos=config.slos,
            router=router if router is not None else pol.router,
            admission=pol.admission,
            rng=rng,
            clock=clock,
        )

    # ---- inputs (off the request path) ------------------------------------------------
    def set_plan(self, plan: Plan | None) -> None:
        if plan is not None:
            self.plan = plan

    def set_snapshots(self, snapshots: Sequence[ReplicaSnapshot]) -> None:
        """The replicas' latest snapshots (views are rebuilt at the next request)."""
        by_pool: dict[str, list[ReplicaSnapshot]] = {p: [] for p in self.pools}
        for s in snapshots:
            key = s.pool if self._split else ALL_POOLS
            if key in by_pool:
                by_pool[key].append(s)
        self.snapshots = by_pool
        live = {p: float(len(s)) for p, s in by_pool.items()}
        # no telemetry yet: every pool counts
        self._live = live if any(live.values()) else dict.fromkeys(self.pools, 1.0)
        self._views = {}
        self._push_running_length()

    def _push_running_length(self) -> None:
        """The learned mean output length, to the policies that weigh running
        requests (``policies.outcome``); per snapshot refresh."""
        mean = self.predictor.lengths.mean_tokens()
        if mean is not None:
            self._tell_policies("set_running_output_tokens", mean)
        self._tell_policies("set_output_lengths", self.predictor.lengths)

    def _tell_policies(self, setter_name: str, value: object) -> None:
        """Call ``setter_name(value)`` on the router and admission that have it."""
        for policy in (self.router, self.admission):
            setter = getattr(policy, setter_name, None)
            if setter is not None:
                setter(value)

    def set_cascade_model(self, model: CascadeModel) -> None:
        """Predict with ``model`` (the controller's fit) from now on (router,
        admission and latency predictions)."""
        self.cascade = model
        self._tell_policies("set_cascade_model", model)

    def sync(self, state: RouterSync) -> None:
        """Take the controller's latest snapshots, Plan and cascade fit (a Ray
        adapter's background refresh). A cascade state that fails to load keeps
        the previous model (logged once); the rest is applied regardless."""
        self.set_snapshots(state.snapshots)
        self.set_plan(state.plan)
        self.synced_s = state.time_s
        lengths = state.lengths
        if lengths is not None and lengths.get("version") != self.predictor.lengths_version:
            try:
                self.predictor.set_length_model(OutputLengthModel.from_dict(dict(lengths)))
                self.predictor.lengths_version = lengths.get("version")
            except (KeyError, TypeError, ValueError):
                self._log_once("lengths", "bad output-length state from controller")
        if state.cascade is not None and state.cascade != self._cascade_state:
            try:
                model = CascadeModel.from_dict(dict(state.cascade))
            except (KeyError, TypeError, ValueError) as exc:
                self._log_once(f"cascade:{type(exc).__name__}", "bad cascade state from controller")
            else:
                self._cascade_state = state.cascade
                self.set_cascade_model(model)

    # ---- the decision ------------------------------------------------------------------
    def classify(self, prompt_tokens: int, requested: str | None = None) -> str:
        """The request's SLO class (see ``SloConfig.classify``)."""
        return self.slos.classify(prompt_tokens, requested)

    def decide(
        self,
        request: RequestInfo,
        requested_class: str | None = None,
        inflight: Mapping[str, int] | None = None,
    ) -> GatewayDecision:
        """Class → pool → hold / spill → admission (module docstring, steps 1–4).
        ``requested_class``: the client's explicit class, if any; ``inflight``:
        this gateway's in-flight counts per replica when it also routes (the
        simulator), so admission sees the state the ranking will. Never raises on
        telemetry or a policy error."""
        self.decisions += 1
        cls = self.classify(request.prompt_tokens, requested_class)
        if cls != request.slo_class:
            request = replace(request, slo_class=cls)
        if self.route_on_predicted_lengths:
            request = self.predictor.annotate(request)  # its predicted output length
        self.arrivals.add(request, self.clock())
        now = self.clock()
        pool = self._choose_pool(cls)
        spilled_from = None
        if self._held(pool):
            other = self._spill(cls, pool)
            if other == pool:  # every live pool is held: admission alone may shed
                self.held_all += 1
            else:
                self.spilled += 1
                spilled_from, pool = pool, other
        decision = self._admit(request, pool, now, inflight)
        if not decision.admit:  # another pool that admits it beats a miss
            for other in self._other_pools(cls, pool):
                alt = self._admit(request, other, now, inflight)
                if alt.admit:
                    self.spilled += 1
                    return GatewayDecision(request, other, alt, spilled_from or pool)
            if decision.defer:
                self.deferred += 1
            else:
                self.rejected += 1
        return GatewayDecision(request, pool, decision, spilled_from)

    def rank(self, request: RequestInfo, view: ReplicaView) -> list[int]:
        """Indices into ``view``, best first (step 5). Never raises, never empty
        when ``view`` is not: a failing or all-filtering router falls back to
        least-outstanding (``rank_fallbacks``)."""
        if view.size == 0:
            return []
        if self.router is not None:
            try:
                order = self.router.rank(request, view, self.rng)
                if order:
                    return order
            except Exception as exc:  # the policy must never leave a request waiting
                self._log_once(type(exc).__name__, "routing policy failed; least-outstanding")
            self.rank_fallbacks += 1
        return least_outstanding_order(view, self.rng)

    def route(
        self, request: RequestInfo, inflight: Mapping[str, int] | None = None
    ) -> tuple[GatewayDecision, ReplicaView | None, list[int]]:
        """``decide`` then ``rank`` in the chosen pool (the simulator's call):
        (decision, the pool's view with ``inflight``, ranking). The ranking is
        empty when the request is not admitted or the pool has no replicas."""
        decision = self.decide(request, inflight=inflight)
        if not decision.admit:
            return decision, None, []
        view = self.pool_view(decision.pool, inflight)
        if view is None:
            return decision, None, []
        order = self.rank(decision.request, view)
        if order:  # the prediction for the replica chosen, logged until its outcome
            self.predictor.predict_chosen(
                self.cascade, decision.request, decision.pool, view, order[0]
            )
        return decision, view, order

    def pool_view(self, pool: str, inflight: Mapping[str, int] | None = None) -> ReplicaView | None:
        """The pool's view of the current snapshots (cached until the next
        ``set_snapshots``) with ``inflight`` counts; None without snapshots.
        Snapshot ages are as of the first request after a refresh."""
        view = self._views.get(pool)
        if view is None:
            snaps = self.snapshots.get(pool)
            if not snaps:
                return None
            view = self._views[pool] = build_view(snaps, None, self.clock())
        return view.with_outstanding(inflight) if inflight else view

    def on_routed(self, replica_id: str, request: RequestInfo) -> None:
        if self.router is not None:
            try:
                self.router.on_routed(replica_id, request)
            except Exception:
                self._log_once("on_routed", "router on_routed hook failed")

    def on_completed(
        self, replica_id: str, request: RequestInfo, outcome: Outcome | None = None
    ) -> None:
        """A request finished on ``replica_id``; with its ``outcome`` (measured
        latencies and length) the output-length model learns it and its logged
        prediction is scored (``orchestrator.predictions``)."""
        if outcome is not None:
            self.predictor.observe(request, outcome)
        if self.router is not None:
            try:
                self.router.on_completed(replica_id, request)
            except Exception:
                self._log_once("on_completed", "router on_completed hook failed")

    def take_arrivals(self) -> tuple[dict[str, tuple[int, float, float]], float]:
        """Per class (requests, mean prompt tokens, mean max tokens) since the last
        call, and the seconds that covers (for ``Controller.report_arrivals``)."""
        return self.arrivals.take(self.clock())

    # ---- steps -------------------------------------------------------------------------
    def _class_weights(self, cls: str) -> Mapping[str, float] | None:
        if self.plan is None or not self._split:
            return None
        routing = self.plan.routing
        return routing.get(cls) or routing.get(self.slos.default_class) or None

    def _choose_pool(self, cls: str) -> str:
        if len(self.pools) == 1:
            return self.pools[0]
        try:
            return self.splitter.choose_pool(
                cls, self._class_weights(cls), self.rng, available=self._live
            )
        except ValueError:  # malformed weights: any pool beats no answer
            return self.pools[int(self.rng.integers(len(self.pools)))]

    def _pool_plan(self, pool: str) -> PoolPlan | None:
        return self.plan.pools.get(pool) if self.plan is not None else None

    def _held(self, pool: str) -> bool:
        pp = self._pool_plan(pool)
        return pp is not None and pp.saturation >= 1.0

    def _other_pools(self, cls: str, pool: str) -> list[str]:
        """The live pools but ``pool``: not held first, then by weight for ``cls``
        (ties in config order): where a held pool spills to, and where a refused
        request is tried before it is shed."""
        weights = self._class_weights(cls) or {}
        others = [p for p in self.pools if p != pool and self.snapshots.get(p)]
        return sorted(others, key=lambda p: (self._held(p), -weights.get(p, 0.0)))

    def _spill(self, cls: str, held: str) -> str:
        """The live, not-held pool with the highest weight; ``held`` if none."""
        order = self._other_pools(cls, held)
        return order[0] if order and not self._held(order[0]) else held

    def _admit(
        self, request: RequestInfo, pool: str, now: float, inflight: Mapping[str, int] | None
    ) -> AdmissionDecision:
        if self.admission is None:
            return ADMITTED
        view = self.pool_view(pool, inflight)
        if view is None:
            return AdmissionDecision(True, "no telemetry yet")
        pp = self._pool_plan(pool)
        pressure = plan_pressure(pp, pool, now) if pp is not None else None
        try:
            return self.admission.decide(request, view, now, pressure)
        except Exception:
            self.admission_errors += 1
            self._log_once("admission", "admission policy failed; admitting")
            return AdmissionDecision(True, "admission policy error: admitted")

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.exception("%s (%s)", message, key)


__all__ = [
    "ALL_POOLS",
    "Gateway",
    "GatewayDecision",
    "PredictionInputs",
    "RouterLike",
    "plan_pressure",
]
