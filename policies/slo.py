"""SLO targets per request class and the probability of meeting them.

Shared by the ``uncertainty`` scorer and the ``slo_feasible`` admission: both
predict a request's latency distribution on each replica with
``uncertainty.predict_latency`` and read P(meet SLO) from it.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, model_validator

from policies.params import PolicyParams
from policies.view import ReplicaView
from replicas.telemetry import RequestInfo
from uncertainty import CascadeModel, LatencyPrediction, predict_latency
from uncertainty.validation import FloatArray


class SloSpec(PolicyParams):
    """Latency targets of one request class (seconds); at least one is set.

    With no ``e2e_s``, the E2E target is derived from the request's expected
    output length L: ``ttft_s + tpot_s · (L − 1)`` (meeting TTFT and TPOT means
    meeting that).
    """

    ttft_s: float | None = Field(default=None, gt=0.0)
    tpot_s: float | None = Field(default=None, gt=0.0)
    e2e_s: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="after")
    def _one_target(self) -> SloSpec:
        if self.ttft_s is None and self.tpot_s is None and self.e2e_s is None:
            raise ValueError("an SLO needs at least one of ttft_s, tpot_s, e2e_s")
        return self

    def e2e_target_s(self, output_tokens: float) -> float | None:
        if self.e2e_s is not None:
            return self.e2e_s
        if self.tpot_s is None:
            return None
        return (self.ttft_s or 0.0) + self.tpot_s * max(output_tokens - 1.0, 1.0)


DEFAULT_SLOS: dict[str, SloSpec] = {"default": SloSpec(ttft_s=2.0, tpot_s=0.1)}


def slo_for(slos: Mapping[str, SloSpec], slo_class: str) -> SloSpec:
    """The class's SLO, else the ``"default"`` entry, else ``DEFAULT_SLOS``."""
    return slos.get(slo_class) or slos.get("default") or DEFAULT_SLOS["default"]


def predict_request(
    model: CascadeModel, view: ReplicaView, request: RequestInfo, output_cv: float
) -> LatencyPrediction:
    """Latency distribution of ``request`` on every replica of ``view``.

    Output length: the predicted length when the request has one (σ =
    ``output_cv`` × it), else ``max_tokens`` with σ = 0 (an upper bound).
    """
    length = request.expected_output_tokens
    sd = output_cv * length if request.predicted_output_tokens is not None else 0.0
    return predict_latency(model, view.load, request.prompt_tokens, length, sd)


def meet_probability(pred: LatencyPrediction, slo: SloSpec, output_tokens: float) -> FloatArray:
    """P(TTFT ≤ ttft_s and E2E ≤ E2E target) per replica, in [0, 1]."""
    return pred.prob_within(slo.ttft_s, slo.e2e_target_s(output_tokens))
