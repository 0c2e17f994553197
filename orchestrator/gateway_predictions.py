"""The gateway's logged predictions, made from the state a request was decided
on (``Gateway`` inherits them): ``prediction_inputs`` takes that state in O(1) at
the decision, ``predict_from`` makes the prediction later (the Ray ingress: in
its background refresh, with the outcome, off the request's path; see
``orchestrator.ingress``), ``predict_for`` does both at once (the simulator)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from orchestrator.calibration import PredictionRecord
from orchestrator.gateway_types import PredictionInputs
from policies import ReplicaView, build_view
from replicas.telemetry import ReplicaSnapshot, RequestInfo
from uncertainty import CascadeModel

if TYPE_CHECKING:
    from orchestrator.predictions import GatewayPredictor


class GatewayPredictions:
    """Mixin of ``Gateway``: the attributes below are the gateway's."""

    snapshots: Mapping[str, Sequence[ReplicaSnapshot]]
    _views: dict[str, ReplicaView]
    cascade: CascadeModel
    clock: Callable[[], float]
    predictor: GatewayPredictor
    rank: Callable[[RequestInfo, ReplicaView], list[int]]  # Gateway.rank

    def predict_for(self, request: RequestInfo, pool: str) -> PredictionRecord | None:
        """The issued prediction (TTFT, TPOT, E2E quantiles, conformally corrected)
        of ``request`` on the replica ranked first in ``pool``, logged until
        ``on_completed`` (the Ray ingress's call). None without telemetry; never
        raises. ``prediction_inputs`` + ``predict_from`` in one step."""
        inputs = self.prediction_inputs(request, pool)
        return self.predict_from(inputs) if inputs is not None else None

    def prediction_inputs(self, request: RequestInfo, pool: str) -> PredictionInputs | None:
        """The state ``request``'s prediction is made from, taken now: the pool's
        current view (or its snapshots, when no view was built since the last
        sync: building one costs as much as the prediction) and the fitted
        cascade model. O(1); None without telemetry for ``pool``."""
        snaps = self.snapshots.get(pool)
        if not snaps:
            return None
        view = self._views.get(pool)
        return PredictionInputs(request, pool, self.cascade, view, tuple(snaps), self.clock())

    def predict_from(self, inputs: PredictionInputs) -> PredictionRecord | None:
        """The prediction of ``inputs.request`` from the state in ``inputs`` (see
        ``predict_for``): the ranking and the quantiles are those of the moment
        the inputs were taken; only the conformal correction is the one current
        now (it moves by a small step per outcome; docs/uncertainty.md). Never
        raises."""
        try:
            view = inputs.view
            if view is None:
                view = build_view(inputs.snapshots, None, inputs.time_s)
            order = self.rank(inputs.request, view)
            if not order:
                return None
            return self.predictor.predict_chosen(
                inputs.cascade, inputs.request, inputs.pool, view, order[0]
            )
        except Exception:
            return None
