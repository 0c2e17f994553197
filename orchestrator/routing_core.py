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

from policies import build_view
from policies.router import Router
from replicas.prompts import chat_text, count_prompt_tokens
from replicas.telemetry import ReplicaSnapshot, RequestInfo

logger = logging.getLogger("cascade.router")


class RoutingCore:
    """Rank replicas for one request with a ``policies`` router (see module doc)."""

    def __init__(
        self,
        router: Router,
        *,
        rng: np.random.Generator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.router = router
        self.rng = rng or np.random.default_rng()
        self.clock = clock
        self.snapshots: dict[str, ReplicaSnapshot] = {}
        self.inflight: dict[str, int] = {}
        self.fallbacks = 0
        self.decisions = 0
        self._logged: set[str] = set()

    def update_snapshots(self, snapshots: Sequence[ReplicaSnapshot]) -> None:
        self.snapshots = {s.replica_id: s for s in snapshots}

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
            snaps = [self._snapshot_for(r, pool) for r in replica_ids]
            view = build_view(snaps, self.inflight, self.clock())
            order = self.router.rank(request, view, self.rng)
            if order:
                return [int(i) for i in order]
            # every replica filtered out (e.g. all KV-full): least loaded, not a hang
            return self._least_outstanding(replica_ids)
        except Exception as exc:  # the policy must never leave a request waiting
            self.fallbacks += 1
            key = type(exc).__name__
            if key not in self._logged:
                self._logged.add(key)
                logger.exception("routing policy failed (%s); least-outstanding fallback", key)
            return self._least_outstanding(replica_ids)

    def _least_outstanding(self, replica_ids: Sequence[str]) -> list[int]:
        loads = np.array([self.inflight.get(r, 0) for r in replica_ids], dtype=float)
        loads += self.rng.random(loads.size) * 1e-3  # random tie-break
        return [int(i) for i in np.argsort(loads)]

    def on_routed(self, replica_id: str, request: RequestInfo) -> None:
        self.inflight[replica_id] = self.inflight.get(replica_id, 0) + 1
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


def request_info_from_body(
    body: object, request_id: str, slo_class: str = "default"
) -> RequestInfo:
    """A ``RequestInfo`` from an OpenAI completions/chat request body."""
    if hasattr(body, "messages"):
        prompt = count_prompt_tokens(chat_text(body.messages))
    else:
        prompt = count_prompt_tokens(getattr(body, "prompt", ""))
    max_tokens = getattr(body, "max_completion_tokens", None) or getattr(body, "max_tokens", None)
    return RequestInfo(
        request_id=request_id,
        prompt_tokens=prompt,
        max_tokens=max(int(max_tokens or 16), 1),
        slo_class=slo_class,
    )
