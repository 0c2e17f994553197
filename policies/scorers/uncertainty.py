"""The ``uncertainty`` scorer: predicted latency *distribution* per replica.

For each candidate, ``uncertainty.predict_latency`` gives this request's TTFT and
E2E mean and variance on that replica: its queue (waiting prefill tokens ×
prefill cost, plus requests this router sent since the snapshot), its prefill,
its decode ITL scaled by the cascade model's predicted change from admitting
this request (its prefill joins the steps the running decodes share, its tokens
add KV pressure), and the replica's own spread. Every quantity is per replica, so
a fast-but-noisy H100 and a slower-but-steady A100 are compared on what matters:
the chance of meeting the SLO.

Objectives (``objective``):

- ``slo_probability`` (default): score = (1 − ε)·P(TTFT ≤ ttft_s and E2E ≤
  target) + ε·target/(target + E2E mean), ε = 1e-3: when P ties (every replica
  ≈ 1 when idle, ≈ 0 in overload) the fastest expected replica still ranks
  first. The tie-break is scaled by the request's own E2E target, so it needs no
  reduction over replicas (the router's hot path counts array operations).
- ``expected_slo``: the system's outcome (``policies.outcome``, issue 14 §3): the
  expected number of requests meeting their SLO, G = P(meet SLO) + Δ, Δ <= 0
  the change this request's prefill causes to the requests already on the
  replica (their TPOT grows by its stall, their ITL σ by the cascade model).
  score = (1 − ε)·exp(G − 1) + ε·target/(target + E2E mean): monotone in G,
  1 at G = 1, in (0, 1] without a reduction over replicas; near G = 1 a step
  in G moves the score as much as a step in P does under ``slo_probability``.
- ``mean_kappa_sigma``: cost c = mean + κ·σ of E2E (or TTFT, ``metric``);
  score = min(c) / c ∈ (0, 1] (1 for the best replica, 0.5 for one twice as slow).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from policies.base import Scorer
from policies.outcome import (
    OutcomeParams,
    learned_running_tokens,
    ongoing_harm,
)
from policies.registry import SCORERS
from policies.slo import SloClass, meet_probability, predict_request, slo_for
from policies.view import IntArray, ReplicaView
from replicas.telemetry import RequestInfo
from uncertainty import CascadeModel, LatencyPrediction
from uncertainty.prediction import predict_slo_probability
from uncertainty.validation import FloatArray

_TIE_BREAK = 1e-3  # weight of the latency ratio in the slo_probability score


class UncertaintyParams(OutcomeParams):
    # tpot_cv and running_output_tokens (OutcomeParams) are used by expected_slo only
    objective: Literal["slo_probability", "expected_slo", "mean_kappa_sigma"] = "slo_probability"
    kappa: float = Field(default=1.0, ge=0.0)
    metric: Literal["e2e", "ttft"] = "e2e"


@SCORERS.register("uncertainty")
class UncertaintyScorer(Scorer):
    """Score replicas by the predicted probability of meeting the request's SLO
    (see the module docstring). ``slos`` maps an SLO class to its targets
    (``default`` covers the others); ``output_cv`` is the relative σ of a
    predicted output length. The cascade model starts at its prior and is
    replaced by the controller's fit through ``set_cascade_model``.

    YAML::

        scorers:
          - type: uncertainty
            weight: 1.0
            params:
              objective: slo_probability   # or expected_slo, mean_kappa_sigma
              kappa: 1.0                   # mean_kappa_sigma only
              metric: e2e                  # mean_kappa_sigma only: e2e | ttft
              output_cv: 0.3
              tpot_cv: 0.1                 # expected_slo only
              running_output_tokens: 256   # expected_slo only, until lengths are learned
              slos:
                default: {ttft_s: 2.0, tpot_s: 0.1}
                interactive: {ttft_s: 0.5, tpot_s: 0.05}
    """

    Params = UncertaintyParams

    def __init__(
        self,
        params: UncertaintyParams | None = None,
        model: CascadeModel | None = None,
    ) -> None:
        self.params = params or UncertaintyParams()
        self.model = model or CascadeModel()
        self.running_output_tokens = self.params.running_output_tokens

    @classmethod
    def from_params(cls, params: UncertaintyParams) -> UncertaintyScorer:
        return cls(params)

    def set_running_output_tokens(self, tokens: float) -> None:
        """The mean output length of the requests already running (the gateway's
        learned mean), for ``expected_slo``; values below 2 are ignored."""
        self.running_output_tokens = learned_running_tokens(self.running_output_tokens, tokens)

    def set_cascade_model(self, model: CascadeModel) -> None:
        """Use the controller's fitted cascade model from now on."""
        self.model = model

    def set_slos(self, slos: dict[str, SloClass]) -> None:
        """Replace the SLO table (e.g. with the deployment file's ``slos``)."""
        self.params = self.params.model_copy(update={"slos": dict(slos)})

    def score(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> FloatArray:
        p = self.params
        if p.objective in ("slo_probability", "expected_slo"):
            slo = slo_for(p.slos, request.slo_class)
            length = request.expected_output_tokens
            ttft_s, e2e_s = slo.ttft_s, slo.e2e_target_s(length)
            if ttft_s is not None and e2e_s is not None:
                # the per-request hot path: P(meet SLO) and E2E mean straight
                # from the view's cached load terms, no LatencyPrediction
                sd = p.output_cv * length if request.predicted_output_tokens is not None else 0.0
                prob, tie = predict_slo_probability(
                    self.model, view.load, request.prompt_tokens, length, sd, ttft_s, e2e_s, e2e_s
                )  # tie = E2E mean + target, the tie-break's denominator
                if p.objective == "expected_slo":
                    prob += self._harm(request, view, slo, length)
                    np.subtract(prob, 1.0, out=prob)
                    np.exp(prob, out=prob)  # exp(G − 1) ∈ (0, 1]
                if candidates.size != view.size:
                    prob, tie = prob[candidates], tie[candidates]
                return _slo_score(prob, tie, e2e_s, shifted=True)
        # Predicting over the whole view and indexing is cheaper than building a
        # sub-view (one ReplicaLoad validation) when filters dropped a few.
        pred = predict_request(self.model, view, request, p.output_cv)
        if candidates.size != view.size:
            pred = _take(pred, candidates)
        if p.objective == "mean_kappa_sigma":
            if p.metric == "ttft":
                cost = pred.ttft_mean_s + p.kappa * pred.ttft_std_s
            else:
                cost = pred.e2e_mean_s + p.kappa * pred.e2e_std_s
            return _ratio(cost)
        slo = slo_for(p.slos, request.slo_class)
        length = request.expected_output_tokens
        prob = meet_probability(pred, slo, length)
        if p.objective == "expected_slo":
            harm = self._harm(request, view, slo, length)
            prob = np.exp(prob + (harm[candidates] if candidates.size != view.size else harm) - 1.0)
        # with no E2E target (TTFT only), the TTFT target scales the tie-break
        scale = slo.e2e_target_s(length) or slo.ttft_s or 1.0
        return _slo_score(prob, pred.e2e_mean_s, scale)

    def _harm(
        self, request: RequestInfo, view: ReplicaView, slo: SloClass, length: float
    ) -> FloatArray:
        """Δ per replica of ``view`` (``policies.outcome.ongoing_harm``)."""
        return ongoing_harm(
            self.model,
            view,
            request.prompt_tokens,
            length,
            slo.tpot_s,
            running_output_tokens=self.running_output_tokens,
            tpot_cv=self.params.tpot_cv,
        )


def _slo_score(
    prob: FloatArray, mean: FloatArray, scale_s: float, *, shifted: bool = False
) -> FloatArray:
    """(1 − ε)·prob + ε·scale/(scale + mean), in [0, 1] for means >= 0 and
    decreasing in the mean. ``shifted``: ``mean`` already holds mean + scale
    (and is consumed). ``prob`` is consumed (scaled in place)."""
    tie = mean if shifted else mean + scale_s
    np.divide(_TIE_BREAK * scale_s, tie, out=tie)
    out: FloatArray = np.multiply(prob, 1.0 - _TIE_BREAK, out=prob)
    out += tie
    return out


def _ratio(cost: FloatArray) -> FloatArray:
    c = np.maximum(cost, 1e-12)
    out: FloatArray = c.min() / c
    return out


def _take(pred: LatencyPrediction, idx: IntArray) -> LatencyPrediction:
    return LatencyPrediction(
        ttft_mean_s=pred.ttft_mean_s[idx],
        ttft_var_s2=pred.ttft_var_s2[idx],
        e2e_mean_s=pred.e2e_mean_s[idx],
        e2e_var_s2=pred.e2e_var_s2[idx],
        itl_std_s=pred.itl_std_s[idx],
    )
