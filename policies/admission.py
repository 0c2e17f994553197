"""Admission: admit, defer or reject a request before it is routed.

``Admission.decide(request, view, now_s, pressure)`` looks at the replicas the
request could go to (a ``ReplicaView``, usually one pool's) and returns an
``AdmissionDecision``. A refusal carries ``retry_after_s`` (for an HTTP
``Retry-After`` header, or for the ingress to re-try a deferred request) when a
wait can help, and None when it cannot.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import Field, model_validator

from policies.backpressure import BackpressureState, TokenBucket
from policies.params import PolicyParams
from policies.registry import ADMISSIONS
from policies.slo import DEFAULT_SLOS, SloClass, meet_probability, predict_request, slo_for
from policies.view import ReplicaView
from replicas.telemetry import RequestInfo
from uncertainty import CascadeModel, LatencyPrediction
from uncertainty.validation import FloatArray


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    """``admit`` or not, why, and when to try again.

    ``defer`` (only when not admitted): hold the request and re-submit after
    ``retry_after_s`` instead of failing it (HTTP 429 + Retry-After).
    ``p_meet``: the predicted P(meet SLO) when the policy computed one.
    """

    admit: bool
    reason: str
    retry_after_s: float | None = None
    defer: bool = False
    p_meet: float | None = None


ADMIT = AdmissionDecision(True, "admitted")


class Admission(ABC):
    """Decides whether a request enters; one instance per ingress."""

    Params: ClassVar[type[PolicyParams]] = PolicyParams
    type_name: ClassVar[str] = ""

    @classmethod
    def from_params(cls, params: Any) -> Self:
        return cls()

    @abstractmethod
    def decide(
        self,
        request: RequestInfo,
        view: ReplicaView,
        now_s: float,
        pressure: BackpressureState | None = None,
    ) -> AdmissionDecision:
        """Decide for ``request`` given the candidate replicas at ``now_s``."""


def _pool_key(view: ReplicaView, pressure: BackpressureState | None) -> str:
    if pressure is not None:
        return pressure.pool
    pools = set(view.pools)
    return pools.pop() if len(pools) == 1 else "*"


class _RefusalParams(PolicyParams):
    action: Literal["reject", "defer"] = "reject"
    min_retry_s: float = Field(default=0.1, gt=0.0)
    max_retry_s: float = Field(default=30.0, gt=0.0)

    @model_validator(mode="after")
    def _retry_range(self) -> Self:
        if self.min_retry_s > self.max_retry_s:
            raise ValueError(
                f"min_retry_s ({self.min_retry_s}) must be <= max_retry_s ({self.max_retry_s})"
            )
        return self

    def clamp(self, s: float) -> float:
        return min(max(s, self.min_retry_s), self.max_retry_s)


@ADMISSIONS.register("always")
class AlwaysAdmit(Admission):
    """Admit everything (the baselines' setting).

    YAML: ``admission: {type: always}``
    """

    def decide(
        self,
        request: RequestInfo,
        view: ReplicaView,
        now_s: float,
        pressure: BackpressureState | None = None,
    ) -> AdmissionDecision:
        return ADMIT


class QueueCapParams(_RefusalParams):
    max_waiting_per_replica: int = Field(default=32, ge=0)


@ADMISSIONS.register("queue_cap")
class QueueCapAdmission(Admission):
    """Refuse when every replica already has ``max_waiting_per_replica`` or more
    queued requests (snapshot waiting + requests sent since); admit as long as
    one has room, since the router will find it.

    Retry-After: the time for the least-queued replica to drain enough queued
    requests, at its predicted queue wait per queued request.

    YAML::

        admission:
          type: queue_cap
          params: {max_waiting_per_replica: 32, action: reject, min_retry_s: 0.1, max_retry_s: 30}
    """

    Params = QueueCapParams

    def __init__(self, params: QueueCapParams | None = None) -> None:
        self.params = params or QueueCapParams()

    @classmethod
    def from_params(cls, params: QueueCapParams) -> QueueCapAdmission:
        return cls(params)

    def decide(
        self,
        request: RequestInfo,
        view: ReplicaView,
        now_s: float,
        pressure: BackpressureState | None = None,
    ) -> AdmissionDecision:
        p = self.params
        if view.size == 0:
            return AdmissionDecision(
                False, "no replica available", p.max_retry_s, p.action == "defer"
            )
        queue = view.waiting + view.unseen
        best = int(np.argmin(queue))
        if queue[best] < p.max_waiting_per_replica:
            return ADMIT
        per_request = float(view.load.queue_wait_mean_s[best]) / max(float(queue[best]), 1.0)
        excess = float(queue[best]) - p.max_waiting_per_replica + 1.0
        return AdmissionDecision(
            False,
            f"every replica has >= {p.max_waiting_per_replica} queued (least: {queue[best]:g})",
            p.clamp(per_request * excess),
            p.action == "defer",
        )


class TokenBudgetParams(_RefusalParams):
    prefill_tokens_per_s: float = Field(default=50_000.0, gt=0.0)
    burst_tokens: float = Field(default=100_000.0, gt=0.0)
    burst_s: float = Field(default=2.0, gt=0.0)
    action: Literal["reject", "defer"] = "defer"


@ADMISSIONS.register("token_budget")
class TokenBudgetAdmission(Admission):
    """Admit new prefill tokens at most at ``prefill_tokens_per_s`` per pool (a
    token bucket holding min(``burst_tokens``, ``burst_s`` seconds of the rate)).
    When a backpressure state is passed, its ``prefill_token_budget`` replaces
    the configured rate: this is how the uncertainty backpressure reduces a
    pool's prefill admission.

    A prompt longer than the burst is charged the burst (it passes when the
    bucket is full). Retry-After = the time until the bucket holds the prompt.

    YAML::

        admission:
          type: token_budget
          params: {prefill_tokens_per_s: 50000, burst_tokens: 100000, burst_s: 2.0, action: defer}
    """

    Params = TokenBudgetParams

    def __init__(self, params: TokenBudgetParams | None = None) -> None:
        self.params = params or TokenBudgetParams()
        self._buckets: dict[str, TokenBucket] = {}

    @classmethod
    def from_params(cls, params: TokenBudgetParams) -> TokenBudgetAdmission:
        return cls(params)

    def decide(
        self,
        request: RequestInfo,
        view: ReplicaView,
        now_s: float,
        pressure: BackpressureState | None = None,
    ) -> AdmissionDecision:
        p = self.params
        key = _pool_key(view, pressure)
        rate = (
            float(max(pressure.prefill_token_budget, 1))
            if pressure is not None
            else p.prefill_tokens_per_s
        )
        burst = min(p.burst_tokens, max(rate * p.burst_s, 1.0))
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, burst, now_s)
        elif bucket.rate != rate:
            bucket.set_rate(rate, now_s, burst)
        wait = bucket.try_take(min(float(request.prompt_tokens), burst), now_s)
        if wait is None:
            return ADMIT
        return AdmissionDecision(
            False,
            f"prefill budget of pool {key!r} exhausted ({rate:.0f} tokens/s)",
            p.clamp(wait),
            p.action == "defer",
        )


class SloFeasibleParams(_RefusalParams):
    min_probability: float = Field(default=0.5, ge=0.0, le=1.0)
    action: Literal["reject", "defer"] = "defer"
    output_cv: float = Field(default=0.3, ge=0.0)
    slos: dict[str, SloClass] = Field(default_factory=lambda: dict(DEFAULT_SLOS))


_DRAIN_GRID = np.linspace(0.0, 1.0, 21)  # fraction of the current queue wait still ahead


class PredictiveAdmission(Admission):
    """What the admissions that predict a request's P(meet SLO) on each candidate
    replica share (``slo_feasible``, ``expected_slo``): the cascade model and
    SLO table they are fed, the refusal when no replica is left, and the
    prediction itself (the ``uncertainty`` scorer's, ``policies.slo``). Each
    subclass narrows ``params`` to its own ``Params`` (with ``slos``,
    ``output_cv``, ``action`` and ``max_retry_s``)."""

    params: Any

    def __init__(self, params: Any = None, model: CascadeModel | None = None) -> None:
        self.params = params or self.Params()
        self.model = model or CascadeModel()

    @classmethod
    def from_params(cls, params: Any) -> Self:
        return cls(params)

    def set_cascade_model(self, model: CascadeModel) -> None:
        self.model = model

    def set_slos(self, slos: dict[str, SloClass]) -> None:
        self.params = self.params.model_copy(update={"slos": dict(slos)})

    def _no_replica(self) -> AdmissionDecision:
        p = self.params
        return AdmissionDecision(False, "no replica available", p.max_retry_s, p.action == "defer")

    def _predict(
        self, request: RequestInfo, view: ReplicaView
    ) -> tuple[SloClass, float, LatencyPrediction, FloatArray]:
        """(the request's SLO, its expected length, the per-replica prediction,
        P(meet SLO) per replica)."""
        slo = slo_for(self.params.slos, request.slo_class)
        length = request.expected_output_tokens
        pred = predict_request(self.model, view, request, self.params.output_cv)
        return slo, length, pred, meet_probability(pred, slo, length)


@ADMISSIONS.register("slo_feasible")
class SloFeasibleAdmission(PredictiveAdmission):
    """Refuse a request whose best predicted P(meet SLO) over the candidate
    replicas is below ``min_probability`` (prediction: the ``uncertainty``
    scorer's, see ``policies.slo``).

    Retry-After: the shortest time until some replica's queue has drained enough
    for P ≥ ``min_probability`` (queue wait shrunk in 5 % steps, assuming the
    queue drains as predicted and nothing jumps ahead). If even an empty queue
    is not enough, the request cannot meet its SLO here: it is rejected with
    ``retry_after_s`` None, whatever ``action`` says.

    YAML::

        admission:
          type: slo_feasible
          params:
            min_probability: 0.5
            action: defer          # or reject
            slos: {default: {ttft_s: 2.0, tpot_s: 0.1}}
    """

    Params = SloFeasibleParams
    params: SloFeasibleParams

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
        best = int(np.argmax(prob))
        p_best = float(prob[best])
        if p_best >= p.min_probability:
            return AdmissionDecision(True, f"P(meet SLO) = {p_best:.3f}", p_meet=p_best)
        retry = _drain_time(pred, view, slo, length, p.min_probability)
        if retry is None:
            return AdmissionDecision(
                False,
                f"infeasible: P(meet SLO) = {p_best:.3f} < {p.min_probability} even with no queue",
                None,
                False,
                p_best,
            )
        return AdmissionDecision(
            False,
            f"P(meet SLO) = {p_best:.3f} < {p.min_probability}",
            p.clamp(retry),
            p.action == "defer",
            p_best,
        )


def _drain_time(
    pred: LatencyPrediction, view: ReplicaView, slo: SloClass, length: float, threshold: float
) -> float | None:
    """Seconds until the first replica reaches P ≥ threshold as its queue drains
    (None if none does with an empty queue). Vectorized over replicas × grid."""
    qw = view.load.queue_wait_mean_s[:, None]
    qv = view.load.queue_wait_std_s[:, None] ** 2
    f = _DRAIN_GRID[None, :]
    shift = (1.0 - f) * qw  # queue wait already drained
    dvar = (1.0 - f * f) * qv
    shifted = LatencyPrediction(
        ttft_mean_s=np.maximum(pred.ttft_mean_s[:, None] - shift, 1e-9),
        ttft_var_s2=np.maximum(pred.ttft_var_s2[:, None] - dvar, 0.0),
        e2e_mean_s=np.maximum(pred.e2e_mean_s[:, None] - shift, 1e-9),
        e2e_var_s2=np.maximum(pred.e2e_var_s2[:, None] - dvar, 0.0),
        itl_std_s=np.broadcast_to(pred.itl_std_s[:, None], shift.shape),
    )
    ok = meet_probability(shifted, slo, length) >= threshold
    if not ok.any():
        return None
    times = np.where(ok, shift, np.inf)
    t = float(times.min())
    return t if math.isfinite(t) else None
