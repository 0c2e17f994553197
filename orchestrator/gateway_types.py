"""The gateway's small types: its decision, the router shape it takes, and the
Plan's backpressure read-out as admission policies take it (re-exported by
``orchestrator.gateway``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from orchestrator.contracts import PoolPlan
from policies import AdmissionDecision
from policies.backpressure import BackpressureState
from replicas.telemetry import RequestInfo


class RouterLike(Protocol):
    """A ``policies.Router`` (or a simulator baseline with the same shape)."""

    def rank(self, request: RequestInfo, view: Any, rng: np.random.Generator) -> list[int]: ...

    def on_routed(self, replica_id: str, request: RequestInfo) -> None: ...

    def on_completed(self, replica_id: str, request: RequestInfo) -> None: ...


def plan_pressure(pp: PoolPlan, pool: str, now_s: float) -> BackpressureState:
    """The Plan's backpressure read-out of one pool, as admission policies take it."""
    return BackpressureState(
        pool, now_s, pp.saturation, pp.admission_token_budget, 1.0, 0.0, "hold"
    )


def least_outstanding_order(view: Any, rng: np.random.Generator) -> list[int]:
    """Indices of ``view`` (a ``ReplicaView``) by in-flight count, ties broken at
    random: the gateway's fallback ranking."""
    loads = np.asarray(view.outstanding, dtype=float) + rng.random(view.size) * 1e-3
    return [int(i) for i in np.argsort(loads)]


@dataclass(frozen=True, slots=True)
class GatewayDecision:
    """One request's decision. ``request`` carries its class; ``pool`` is where
    it goes (or would have gone); ``spilled_from`` names the held pool it left."""

    request: RequestInfo
    pool: str
    admission: AdmissionDecision
    spilled_from: str | None = None

    @property
    def admit(self) -> bool:
        return self.admission.admit

    @property
    def slo_class(self) -> str:
        return self.request.slo_class

    @property
    def outcome(self) -> str:
        """``admitted``, ``deferred`` (429 + Retry-After: try again) or ``rejected``."""
        if self.admission.admit:
            return "admitted"
        return "deferred" if self.admission.defer else "rejected"
