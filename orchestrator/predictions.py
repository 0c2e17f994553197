"""The gateway's predictions: output lengths in, calibrated latency quantiles out.

``GatewayPredictor`` is the part of the ``Gateway`` that learns from completed
requests (pure; the simulator and the Ray ingress feed it the same way):

* **output lengths** (``uncertainty.OutputLengthModel``): every completion with
  its ``Outcome`` is learned at once into the gateway's model and into a delta
  that ``take_completions`` hands to the controller (``Controller.report_completions``,
  which merges the deltas of every gateway); the controller's merged model comes
  back with ``set_length_model`` (a copy: local learning goes on until the next
  one). ``annotate`` sets a request's ``predicted_output_tokens`` to the mean of
  its predicted distribution (capped by its ``max_tokens``) when it has none.
* **latency predictions for the chosen replica** (``predict_chosen``): TTFT,
  TPOT, E2E at P50/P90/P99 mixed over the length distribution
  (``uncertainty.request_quantiles``), corrected and logged by the
  ``Calibrator`` (``orchestrator.calibration``), and matched with the outcome
  in ``observe``.

Never raises on the request path: a prediction that fails is skipped (counted
in ``failures``). ``observe`` takes a validated ``Outcome`` (its constructor
refuses NaN); a length the model refuses is counted and dropped. A request that
ends without an outcome must be ``discard``-ed: ``pending`` holds a prediction
(~1 KiB) per request until its outcome or its discard (``MAX_PENDING`` is only
the backstop).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from orchestrator.calibration import Calibrator, Outcome, PredictionRecord
from policies.view import ReplicaView
from replicas.telemetry import RequestInfo
from uncertainty import CascadeModel
from uncertainty.output_length import OutputLengthModel
from uncertainty.request_quantiles import request_quantiles
from uncertainty.validation import FloatArray

logger = logging.getLogger("cascade.gateway")
MAX_PENDING = 100_000  # issued predictions awaiting an outcome (oldest dropped)


class GatewayPredictor:
    """See the module docstring."""

    def __init__(self, lengths: OutputLengthModel | None = None) -> None:
        self.lengths = lengths or OutputLengthModel()
        self._delta = self.lengths.empty_like()
        self.calibration = Calibrator()
        self.pending: dict[str, PredictionRecord] = {}
        self.failures = 0
        self.bad_outcomes = 0
        self.lengths_version: object = None

    # ---- lengths ---------------------------------------------------------------------
    def annotate(self, request: RequestInfo) -> RequestInfo:
        """``request`` with its predicted mean output length (unchanged when it has
        one, e.g. the simulator's oracle, or before the model knows anything)."""
        if request.predicted_output_tokens is not None:
            return request
        pred = self.lengths.predict(request.slo_class, request.prompt_tokens, request.max_tokens)
        if pred is None:
            return request
        return _with_prediction(request, pred.mean)

    def take_completions(self) -> OutputLengthModel:
        """The lengths learned since the last call (for the controller)."""
        delta, self._delta = self._delta, self.lengths.empty_like()
        return delta

    def set_length_model(self, model: OutputLengthModel) -> None:
        """Predict with ``model`` (the controller's merge of every gateway's
        completions) from now on."""
        self.lengths = model

    # ---- latency predictions ----------------------------------------------------------
    def predict_chosen(
        self, cascade: CascadeModel, request: RequestInfo, pool: str, view: ReplicaView, index: int
    ) -> PredictionRecord | None:
        """Predict ``request`` on replica ``index`` of ``view`` (the chosen one) and
        log it until ``observe``; None if the prediction failed."""
        try:
            lp = self.lengths.predict(request.slo_class, request.prompt_tokens, request.max_tokens)
            grid: Sequence[float] | FloatArray = [float(request.max_tokens)]
            if lp is not None:
                grid = lp.grid
            elif request.predicted_output_tokens is not None:
                grid = [request.expected_output_tokens]  # a known length (the oracle)
            raw = request_quantiles(cascade, view.load, index, request.prompt_tokens, grid)
            record = self.calibration.predict(
                pool,
                request.slo_class,
                raw,
                lp.quantile(0.5) if lp is not None else math.nan,
                lp.quantile(0.9) if lp is not None else math.nan,
            )
        except Exception:  # never fail a request for its prediction
            self.failures += 1
            if self.failures == 1:
                logger.exception("latency prediction failed; skipped")
            return None
        if len(self.pending) >= MAX_PENDING:
            self.pending.pop(next(iter(self.pending)))
        self.pending[request.request_id] = record
        return record

    def discard(self, request_id: str) -> None:
        """Forget the prediction logged for a request that ended without an outcome
        (an error, a client that left, a unary answer without a TTFT): otherwise it
        would wait in ``pending`` until ``MAX_PENDING`` newer ones push it out. A
        request without a logged prediction (or already observed) is ignored."""
        self.pending.pop(request_id, None)

    def observe(self, request: RequestInfo, outcome: Outcome) -> None:
        """A completed request: learn its length, match its prediction."""
        try:
            tokens = min(outcome.output_tokens, request.max_tokens)
            for model in (self.lengths, self._delta):
                model.observe(request.slo_class, request.prompt_tokens, request.max_tokens, tokens)
        except ValueError:
            self.bad_outcomes += 1
        record = self.pending.pop(request.request_id, None)
        if record is not None:
            self.calibration.observe(record, outcome)


def _with_prediction(request: RequestInfo, mean: float) -> RequestInfo:
    # RequestInfo is frozen with slots; dataclasses.replace re-validates every field
    from dataclasses import replace

    return replace(request, predicted_output_tokens=float(mean))
