"""The ``expected_slo`` admission: shed a request only when admitting it lowers
the expected number of requests that meet their SLO (issue 14 §3).

Admitting the request on replica i is worth G_i = P_i + Δ_i requests meeting
their SLO (``policies.outcome``: its own P(meet SLO) plus the change its prefill
causes to the requests already there); refusing it is worth 0 (a refused or
deferred request is a miss, and nothing else changes). So the request is
admitted when max_i G_i ≥ 0 and refused otherwise: no threshold to tune. The
``expected_slo`` objective of the ``uncertainty`` scorer ranks by the same G.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from policies.admission import (
    AdmissionDecision,
    PredictiveAdmission,
    _drain_time,
    _RefusalParams,
)
from policies.backpressure import BackpressureState
from policies.outcome import (
    OutcomeParams,
    learned_running_tokens,
    ongoing_harm,
)
from policies.registry import ADMISSIONS
from policies.view import ReplicaView
from replicas.telemetry import RequestInfo
from uncertainty import CascadeModel


class ExpectedSloParams(_RefusalParams, OutcomeParams):
    action: Literal["reject", "defer"] = "defer"


@ADMISSIONS.register("expected_slo")
class ExpectedSloAdmission(PredictiveAdmission):
    """Admit unless every candidate replica has G = P(meet SLO) + Δ < 0 (module
    docstring). ``p_meet`` of the decision is the request's own P on the replica
    with the largest G.

    Retry-After (a refusal with ``action: defer``): the time until some replica's
    queue has drained enough for P to outweigh the harm Δ of the least-harmed
    replica (``slo_feasible``'s drain estimate); when no drain is enough the
    request is rejected with ``retry_after_s`` None.

    YAML::

        admission:
          type: expected_slo
          params:
            action: defer              # or reject
            tpot_cv: 0.1               # TPOT spread between a replica's requests
            running_output_tokens: 256 # until the gateway feeds the learned mean
    """

    Params = ExpectedSloParams
    params: ExpectedSloParams

    def __init__(
        self, params: ExpectedSloParams | None = None, model: CascadeModel | None = None
    ) -> None:
        super().__init__(params, model)
        self.running_output_tokens = self.params.running_output_tokens

    def set_running_output_tokens(self, tokens: float) -> None:
        """The learned mean output length of running requests (>= 2, else ignored)."""
        self.running_output_tokens = learned_running_tokens(self.running_output_tokens, tokens)

    def decide(
        self,
        request: RequestInfo,
        view: ReplicaView,
        now_s: float,
        pressure: BackpressureState | None = None,
    ) -> AdmissionDecision:
        p = self.params
        if view.size == 0:
            return self._no_replica()
        slo, length, pred, prob = self._predict(request, view)
        harm = ongoing_harm(
            self.model,
            view,
            request.prompt_tokens,
            length,
            slo.tpot_s,
            running_output_tokens=self.running_output_tokens,
            tpot_cv=p.tpot_cv,
        )
        gain = prob + harm
        best = int(np.argmax(gain))
        g, p_best = float(gain[best]), float(prob[best])
        if g >= 0.0:
            return AdmissionDecision(
                True, f"expected SLO gain {g:+.3f} (P = {p_best:.3f})", p_meet=p_best
            )
        # the least-harmed replica: the P that would make admitting break even there
        need = float(min(-harm.max(), 1.0))
        retry = _drain_time(pred, view, slo, length, need) if need < 1.0 else None
        reason = f"admitting lowers the expected SLO count ({g:+.3f}; P = {p_best:.3f})"
        if retry is None:
            return AdmissionDecision(False, reason, None, False, p_best)
        return AdmissionDecision(False, reason, p.clamp(retry), p.action == "defer", p_best)


__all__ = ["ExpectedSloAdmission", "ExpectedSloParams"]
