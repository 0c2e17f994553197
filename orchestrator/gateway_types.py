"""The gateway's small types: its decision, the router shape it takes, and the
Plan's backpressure read-out as admission policies take it (re-exported by
``orchestrator.gateway``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from orchestrator.contracts import PoolPlan
from policies import AdmissionDecision, ReplicaView
from policies.backpressure import BackpressureState
from replicas.telemetry import ReplicaSnapshot, RequestInfo
from uncertainty import CascadeModel


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
class PredictionInputs:
    """What the gateway's prediction for one request needs, taken when the
    request is decided (``Gateway.prediction_inputs``: references, O(1)), so the
    prediction itself (a ranking and the quantiles, ~1 ms of Python) can be
    computed later, off the request's path, from the state the request was
    decided on (``Gateway.predict_from``). ``view`` is the pool's view if one
    was built since the last sync, else None and ``snapshots`` / ``time_s``
    rebuild it."""

    request: RequestInfo
    pool: str
    cascade: CascadeModel
    view: ReplicaView | None
    snapshots: tuple[ReplicaSnapshot, ...]
    time_s: float


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
