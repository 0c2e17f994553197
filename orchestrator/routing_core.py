"""The pure half of the Serve router adapter: candidate replicas → a ranking.

``RoutingCore`` keeps the router-local state Serve's ``RequestRouter`` would
otherwise spread over callbacks (in-flight counts, the candidates' snapshots)
and ranks with the deployment's ``Gateway`` (``orchestrator.gateway``: the same
decision object the ingress and the simulator use). It never raises: if the
policy fails (bad telemetry, a bug), the request is ranked by least-outstanding
instead, the failure is counted and logged once per error type. (Ray's own
``PrefixCacheAffinityRouter`` shows why: an exception inside ``choose_replicas``
leaves the request waiting forever.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from orchestrator.contracts import Plan, RouterReport, RouterSync
from orchestrator.gateway import Gateway
from orchestrator.request_info import request_info_from_body
from policies import ReplicaView, build_view
from policies.router import Router
from replicas.telemetry import ReplicaSnapshot, RequestInfo
from uncertainty import CascadeModel

# a replica absent from the snapshots and not routed to for this long (a replica
# replaced, its node lost) is forgotten: its in-flight and routed counts go
REPLICA_TTL_S = 600.0


class RoutingCore:
    """Rank replicas for one request with the gateway's router (module doc).

    ``gateway``: the deployment's ``Gateway`` (its router ranks; its SLO classes
    classify requests parsed here). A bare ``Router`` is wrapped in a gateway
    without pools (tests, a router used on its own).
    """

    def __init__(
        self,
        gateway: Gateway | Router,
        *,
        rng: np.random.Generator | None = None,
        clock: Callable[[], float] = time.time,
        config_fingerprint: str = "",
    ) -> None:
        if not isinstance(gateway, Gateway):
            gateway = Gateway(router=gateway, rng=rng, clock=clock)
        elif rng is not None:
            gateway.rng = rng
        self.gateway = gateway
        self.config_fingerprint = config_fingerprint  # reported, so status can compare
        self.clock = clock
        self.snapshots: dict[str, ReplicaSnapshot] = {}
        # per replica id: in-flight and routed counts, and when it was last seen
        # (in the snapshots or routed to); replicas unseen for REPLICA_TTL_S are
        # dropped from all three, so replica churn does not grow them without bound
        self.inflight: dict[str, int] = {}
        self.routed: dict[str, int] = {}
        self._seen: dict[str, float] = {}
        self.decisions = 0
        # the view of the current snapshots for the last candidate set: built once
        # per snapshot refresh (an O(replicas) Python loop), then refreshed per
        # request with this router's in-flight counts only (ReplicaView.with_outstanding)
        self._base: ReplicaView | None = None
        self._base_key: tuple[str, ...] = ()  # (pool, *replica ids)

    @property
    def router(self) -> Any:
        return self.gateway.router

    @property
    def cascade(self) -> CascadeModel:
        return self.gateway.cascade

    @property
    def plan(self) -> Plan | None:
        return self.gateway.plan

    @property
    def fallbacks(self) -> int:
        """Decisions the policy could not rank (it raised or filtered every replica)."""
        return self.gateway.rank_fallbacks

    def update_snapshots(self, snapshots: Sequence[ReplicaSnapshot]) -> None:
        self.snapshots = {s.replica_id: s for s in snapshots}
        self._base = None  # rebuilt from these snapshots at the next decision
        now = self.clock()
        seen = self._seen
        for rid in self.snapshots:
            seen[rid] = now
        for rid in [r for r, t in seen.items() if now - t > REPLICA_TTL_S]:
            del seen[rid]
            self.inflight.pop(rid, None)
            self.routed.pop(rid, None)

    def sync(self, state: RouterSync) -> None:
        """Take the controller's latest snapshots, Plan and cascade fit (from the
        adapter's background refresh; see ``Gateway.sync``)."""
        self.update_snapshots(state.snapshots)
        self.gateway.sync(state)

    def report(self) -> RouterReport:
        """This router's state for the controller (see ``RouterReport``)."""
        plan = self.gateway.plan
        return RouterReport(
            plan_version=plan.version if plan is not None else 0,
            cascade_theta=cascade_theta(self.gateway.cascade),
            decisions=self.decisions,
            fallbacks=self.fallbacks,
            routed=dict(self.routed),
            view_age_s=max(self.clock() - self.gateway.synced_s, 0.0),
            config_fingerprint=self.config_fingerprint,
        )

    def request_info(self, body: object, request_id: str) -> RequestInfo:
        """The request parsed from an OpenAI body, classed by the gateway's SLO
        classes (the ingress writes its class into the body's ``cascade_class``)."""
        info = request_info_from_body(body, request_id, slos=self.gateway.slos)
        return self.gateway.predictor.annotate(info)  # its predicted output length

    def _snapshot_for(self, replica_id: str, pool: str) -> ReplicaSnapshot:
        snap = self.snapshots.get(replica_id)
        # a replica the controller has not heard from yet: an empty snapshot, so
        # the policy's documented priors apply
        return snap or ReplicaSnapshot(replica_id=replica_id, pool=pool, time_s=self.clock())

    def rank(self, replica_ids: Sequence[str], request: RequestInfo, pool: str = "") -> list[int]:
        """Indices into ``replica_ids``, best first (``Gateway.rank``). Never
        raises, never empty when ``replica_ids`` is not."""
        self.decisions += 1
        if not replica_ids:
            return []
        try:
            view = self._view(replica_ids, pool).with_outstanding(self.inflight)
        except Exception:  # unreadable telemetry: rank on in-flight counts alone
            self.gateway.rank_fallbacks += 1
            loads = np.array([self.inflight.get(r, 0) for r in replica_ids], dtype=float)
            loads += self.gateway.rng.random(loads.size) * 1e-3  # random tie-break
            return [int(i) for i in np.argsort(loads)]
        return self.gateway.rank(request, view)

    def _view(self, replica_ids: Sequence[str], pool: str) -> ReplicaView:
        """The base view of ``replica_ids`` (in that order) from the current
        snapshots, cached until the snapshots or the candidate set change.
        Snapshot ages are as of its build (at most one refresh period old)."""
        key = (pool, *replica_ids)
        if self._base is None or key != self._base_key:
            snaps = [self._snapshot_for(r, pool) for r in replica_ids]
            self._base = build_view(snaps, None, self.clock())
            self._base_key = key
        return self._base

    def on_routed(self, replica_id: str, request: RequestInfo) -> None:
        self.inflight[replica_id] = self.inflight.get(replica_id, 0) + 1
        self.routed[replica_id] = self.routed.get(replica_id, 0) + 1
        self._seen[replica_id] = self.clock()
        self.gateway.on_routed(replica_id, request)

    def on_completed(self, replica_id: str, request: RequestInfo | None) -> None:
        n = self.inflight.get(replica_id)
        if n is not None:  # a replica forgotten meanwhile is not brought back
            self.inflight[replica_id] = max(n - 1, 0)
        if request is not None:
            self.gateway.on_completed(replica_id, request)


def cascade_theta(model: CascadeModel) -> tuple[float, float, float, float]:
    """θ = (log scale, a, b, c) of a cascade model: what router reports compare."""
    c = model.coefficients
    return (c.log_scale, c.a_prefill, c.b_kv, c.c_heterogeneity)
