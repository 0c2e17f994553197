"""``CascadeRequestRouter``: Ray Serve's ``RequestRouter`` driven by ``policies``.

No policy logic lives here: ``choose_replicas`` asks ``RoutingCore`` (pure; it
ranks with the deployment's ``Gateway``, the decision object the ingress and the
simulator share) to rank the candidates and returns one rank per replica, best first, as Serve
expects. The latest snapshots, Plan and fitted cascade model come from the
controller actor through the process's ``SyncHub`` (one controller call per
``refresh_s`` for every router and the ingress in this process), which also
carries this router's ``RouterReport`` (plan version held, decisions, fallbacks,
requests routed per replica: ``cascade status`` shows them). A request never
waits on the controller, and if the controller is gone the router keeps its last
view, model and its own in-flight counts.

Configured per pool deployment with
``RequestRouterConfig(request_router_class=CascadeRequestRouter,
request_router_kwargs={"config": <Cascade config as a dict>})``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

from ray.serve.request_router import (
    FIFOMixin,
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

from orchestrator.config import parse_config
from orchestrator.controller_state import config_fingerprint
from orchestrator.gateway import Gateway
from orchestrator.metrics import RouterMetrics
from orchestrator.routing_core import RoutingCore
from orchestrator.sync_hub import process_hub
from replicas.loop_lag import LoopLag
from replicas.names import CONTROLLER_NAME, CONTROLLER_NAMESPACE
from replicas.telemetry import RequestInfo

logger = logging.getLogger("cascade.router")
_MAX_PARSED = 4096  # parsed requests kept for on_request_routed (oldest dropped)


class CascadeRequestRouter(FIFOMixin, RequestRouter):
    """See the module docstring."""

    def initialize_state(  # type: ignore[override]
        self,
        config: dict[str, Any] | None = None,
        refresh_s: float = 0.25,
        controller_name: str = CONTROLLER_NAME,
        controller_namespace: str = CONTROLLER_NAMESPACE,
    ) -> None:
        cfg = parse_config(config or {"pools": [{"name": "default", "accelerator": "CPU"}]})
        self.core = RoutingCore(
            Gateway.from_config(cfg), config_fingerprint=config_fingerprint(cfg)
        )
        self.refresh_s = refresh_s
        self._controller_name = controller_name
        self._controller_namespace = controller_namespace
        self._refresh_task: asyncio.Task[None] | None = None
        self._requests: dict[str, RequestInfo] = {}  # routed, until completed
        self._parsed: dict[str, RequestInfo] = {}  # parsed, until routed
        self._metrics = RouterMetrics()
        self._policy = cfg.router.profile or "custom"
        # one id per router instance: a deployment's handle owner (the ingress
        # replica, a task holding a handle) has its own router
        deployment = getattr(getattr(self, "_deployment_id", None), "name", "?")
        self._router_id = f"{deployment}@{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    # ---- background refresh (never on the request path) -----------------------------
    def _ensure_refresh(self) -> None:
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        # polled at twice the hub's rate (an O(1) look at shared state), so an
        # answer is applied at most refresh_s / 2 after it arrives
        hub = process_hub(self._controller_name, self._controller_namespace, self.refresh_s)
        lag = LoopLag(f"router {self._router_id}")  # Serve's router loop: stalls route nobody
        seen = 0
        while True:
            with contextlib.suppress(Exception):  # never let the loop die
                hub.report(self._router_id, self.core.report())
                state, seq = hub.poll()
                if state is not None and seq != seen:
                    seen = seq
                    self.core.sync(state)
            await lag.sleep(self.refresh_s / 2)

    # ---- Serve's hooks ----------------------------------------------------------------------
    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        self._ensure_refresh()
        if not candidate_replicas:
            return []
        t0 = time.perf_counter()
        info = self._request_info(pending_request)
        ids = [r.replica_id.unique_id for r in candidate_replicas]
        order = self.core.rank(ids, info)
        pool = (
            self.core.snapshots[ids[order[0]]].pool if ids[order[0]] in self.core.snapshots else ""
        )
        with contextlib.suppress(Exception):
            self._metrics.observe_decision(time.perf_counter() - t0, self._policy, pool)
        return [[candidate_replicas[i]] for i in order]

    def _request_info(self, pending: PendingRequest | None) -> RequestInfo:
        rid = "unknown"
        body: object = None
        if pending is not None:
            rid = str(pending.metadata.internal_request_id or pending.metadata.request_id)
            cached = self._parsed.get(rid)
            if cached is not None:  # parsed by choose_replicas (the prefix hashes cost)
                return cached
            body = pending.args[0] if pending.args else None
        try:
            info = self.core.request_info(body, rid)
        except Exception:  # a body we cannot read still gets routed
            info = RequestInfo(request_id=rid, prompt_tokens=0, max_tokens=16)
        if pending is not None:
            self._parsed[rid] = info
            if len(self._parsed) > _MAX_PARSED:  # requests cancelled before routing
                self._parsed.pop(next(iter(self._parsed)))
        return info

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any
    ) -> None:
        info = self._request_info(pending_request)
        self._parsed.pop(info.request_id, None)
        self._requests[str(pending_request.metadata.internal_request_id)] = info
        self.core.on_routed(replica_id.unique_id, info)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        info = self._requests.pop(str(internal_request_id), None)
        self.core.on_completed(replica_id.unique_id, info)
