"""The pure half of the Serve router adapter: candidate replicas → a ranking.

``RoutingCore`` keeps the router-local state Serve's ``RequestRouter`` would
otherwise spread over callbacks (in-flight counts, the latest snapshots) and
calls the ``policies`` router profile. It never raises: if the policy fails (bad
telemetry, a bug), the request is ranked by least-outstanding instead, the
failure is counted and logged once per error type. (Ray's own
``PrefixCacheAffinityRouter`` shows why: an exception inside ``choose_replicas``
leaves the request waiting forever.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

from orchestrator.contracts import Plan, RouterReport, RouterSync
from policies import ReplicaView, build_view
from policies.router import Router
from replicas.prompts import chat_text, count_prompt_tokens, prefix_block_hashes
from replicas.telemetry import ReplicaSnapshot, RequestInfo
from uncertainty import CascadeModel

logger = logging.getLogger("cascade.router")


class RoutingCore:
    """Rank replicas for one request with a ``policies`` router (see module doc)."""

    def __init__(
        self,
        router: Router,
        *,
        rng: np.random.Generator | None = None,
        clock: Callable[[], float] = time.time,
        config_fingerprint: str = "",
    ) -> None:
        self.router = router
        self.config_fingerprint = config_fingerprint  # reported, so status can compare
        self.rng = rng or np.random.default_rng()
        self.clock = clock
        self.snapshots: dict[str, ReplicaSnapshot] = {}
        self.inflight: dict[str, int] = {}
        self.routed: dict[str, int] = {}
        self.fallbacks = 0
        self.decisions = 0
        self.plan: Plan | None = None
        self.cascade = CascadeModel()  # the prior until the controller's fit arrives
        self.synced_s = -float("inf")  # controller time of the last sync
        self._cascade_state: object = None
        self._logged: set[str] = set()
        # the view of the current snapshots for the last candidate set: built once
        # per snapshot refresh (an O(replicas) Python loop), then refreshed per
        # request with this router's in-flight counts only (ReplicaView.with_outstanding)
        self._base: ReplicaView | None = None
        self._base_key: tuple[str, ...] = ()  # (pool, *replica ids)

    def update_snapshots(self, snapshots: Sequence[ReplicaSnapshot]) -> None:
        self.snapshots = {s.replica_id: s for s in snapshots}
        self._base = None  # rebuilt from these snapshots at the next decision

    def sync(self, state: RouterSync) -> None:
        """Take the controller's latest snapshots, Plan and cascade fit (from the
        adapter's background refresh). A cascade state that fails to load keeps
        the previous model (logged once); the rest is applied regardless."""
        self.update_snapshots(state.snapshots)
        if state.plan is not None:
            self.plan = state.plan
        self.synced_s = state.time_s
        if state.cascade is not None and state.cascade != self._cascade_state:
            try:
                model = CascadeModel.from_dict(dict(state.cascade))
            except (KeyError, TypeError, ValueError) as exc:
                self._log_once(f"cascade:{type(exc).__name__}", "bad cascade state from controller")
            else:
                self.cascade = model
                self._cascade_state = state.cascade
                self.router.set_cascade_model(model)

    def report(self) -> RouterReport:
        """This router's state for the controller (see ``RouterReport``)."""
        return RouterReport(
            plan_version=self.plan.version if self.plan is not None else 0,
            cascade_theta=cascade_theta(self.cascade),
            decisions=self.decisions,
            fallbacks=self.fallbacks,
            routed=dict(self.routed),
            view_age_s=max(self.clock() - self.synced_s, 0.0),
            config_fingerprint=self.config_fingerprint,
        )

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.exception("%s (%s)", message, key)

    def _snapshot_for(self, replica_id: str, pool: str) -> ReplicaSnapshot:
        snap = self.snapshots.get(replica_id)
        # a replica the controller has not heard from yet: an empty snapshot, so
        # the policy's documented priors apply
        return snap or ReplicaSnapshot(replica_id=replica_id, pool=pool, time_s=self.clock())

    def rank(self, replica_ids: Sequence[str], request: RequestInfo, pool: str = "") -> list[int]:
        """Indices into ``replica_ids``, best first. Never raises, never empty
        when ``replica_ids`` is not."""
        self.decisions += 1
        if not replica_ids:
            return []
        try:
            view = self._view(replica_ids, pool).with_outstanding(self.inflight)
            order = self.router.rank(request, view, self.rng)
            if order:
                return [int(i) for i in order]
            # every replica filtered out (e.g. all KV-full): least loaded, not a hang
            return self._least_outstanding(replica_ids)
        except Exception as exc:  # the policy must never leave a request waiting
            self.fallbacks += 1
            self._log_once(type(exc).__name__, "routing policy failed; least-outstanding fallback")
            return self._least_outstanding(replica_ids)

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

    def _least_outstanding(self, replica_ids: Sequence[str]) -> list[int]:
        loads = np.array([self.inflight.get(r, 0) for r in replica_ids], dtype=float)
        loads += self.rng.random(loads.size) * 1e-3  # random tie-break
        return [int(i) for i in np.argsort(loads)]

    def on_routed(self, replica_id: str, request: RequestInfo) -> None:
        self.inflight[replica_id] = self.inflight.get(replica_id, 0) + 1
        self.routed[replica_id] = self.routed.get(replica_id, 0) + 1
        try:
            self.router.on_routed(replica_id, request)
        except Exception:
            logger.exception("router on_routed hook failed")

    def on_completed(self, replica_id: str, request: RequestInfo | None) -> None:
        n = self.inflight.get(replica_id, 0)
        self.inflight[replica_id] = max(n - 1, 0)
        if request is not None:
            try:
                self.router.on_completed(replica_id, request)
            except Exception:
                logger.exception("router on_completed hook failed")


def cascade_theta(model: CascadeModel) -> tuple[float, float, float, float]:
    """θ = (log scale, a, b, c) of a cascade model: what router reports compare."""
    c = model.coefficients
    return (c.log_scale, c.a_prefill, c.b_kv, c.c_heterogeneity)


def request_info_from_body(
    body: object, request_id: str, slo_class: str = "default", *, with_hashes: bool = True
) -> RequestInfo:
    """A ``RequestInfo`` from an OpenAI completions/chat request body, with the
    prompt's prefix block hashes (``replicas.prompts.prefix_block_hashes``) for
    the prefix-affinity scorers unless ``with_hashes`` is False (the ingress:
    only routers score prefixes, and hashing is the costly part of parsing)."""
    if hasattr(body, "messages"):
        prompt: object = chat_text(body.messages)
    else:
        prompt = getattr(body, "prompt", "")
    max_tokens = getattr(body, "max_completion_tokens", None) or getattr(body, "max_tokens", None)
    return RequestInfo(
        request_id=request_id,
        prompt_tokens=count_prompt_tokens(prompt),
        max_tokens=max(int(max_tokens or 16), 1),
        prefix_hashes=prefix_block_hashes(prompt) if with_hashes else (),
        slo_class=slo_class,
    )
