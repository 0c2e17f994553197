"""SLO classes: the one SLO type, the class table, and P(meet SLO).

``SloClass`` is the only description of a latency objective in Cascade: the
config file's ``slos.classes`` entries, the tables of the SLO-aware policies
(``uncertainty`` scorer, ``slo_feasible`` admission), the optimizer's per-class
E2E target, and the simulator's SLO attainment all read it. ``SloConfig`` is the
table (classes + the default class) with the request classifier the gateway uses.

Targets a class does not set do not constrain. E2E target of a request of L
output tokens: ``e2e_s`` when set, else ``ttft_s + tpot_s · (L − 1)`` (E2E = TTFT +
(L − 1) inter-token gaps; a one-token answer's target is its TTFT target), None
without ``tpot_s``. Meeting the SLO (``SloClass.met``) means every set target
holds: TTFT ≤ ``ttft_s``, TPOT ≤ ``tpot_s``, E2E ≤ ``e2e_s``. A deployment's
classes (``SloConfig``) set both ``ttft_s`` and ``tpot_s``; a policy file's
table may give any one target (e.g. ``batch: {e2e_s: 600}``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from policies.params import PolicyParams
from policies.view import ReplicaView
from replicas.telemetry import RequestInfo
from uncertainty import CascadeModel, LatencyPrediction, predict_latency
from uncertainty.validation import FloatArray


class SloClass(PolicyParams):
    """A request class and its latency objectives (seconds) at ``quantile``.

    ``max_prompt_tokens``: the class takes requests whose prompt has at most this
    many tokens (see ``SloConfig.classify``); None: only by explicit choice or as
    the default class.

    YAML (one entry of ``slos.classes``)::

        {name: interactive, ttft_s: 1.0, tpot_s: 0.05, e2e_s: 20.0, quantile: 0.99,
         max_prompt_tokens: 4096}
    """

    name: str = Field(default="default", min_length=1)
    ttft_s: float | None = Field(default=None, gt=0)
    tpot_s: float | None = Field(default=None, gt=0)
    e2e_s: float | None = Field(default=None, gt=0)
    quantile: float = Field(default=0.99, gt=0.5, lt=1.0)
    max_prompt_tokens: int | None = Field(default=None, ge=1, description="class by prompt length")

    @model_validator(mode="after")
    def _one_target(self) -> SloClass:
        if self.ttft_s is None and self.tpot_s is None and self.e2e_s is None:
            raise ValueError("an SLO needs at least one of ttft_s, tpot_s, e2e_s")
        return self

    def e2e_target_s(self, output_tokens: float) -> float | None:
        """E2E objective (s) of a request of ``output_tokens`` (module docstring)."""
        if self.e2e_s is not None:
            return self.e2e_s
        if self.tpot_s is None:
            return None
        return (self.ttft_s or 0.0) + self.tpot_s * max(output_tokens - 1.0, 0.0)

    def met(
        self, ttft_s: NDArray[np.float64], tpot_s: NDArray[np.float64], e2e_s: NDArray[np.float64]
    ) -> NDArray[np.bool_]:
        """Element-wise: did each request meet this SLO (TTFT, TPOT and E2E)."""
        ok: NDArray[np.bool_] = np.ones(np.shape(ttft_s), dtype=bool)
        if self.ttft_s is not None:
            ok &= ttft_s <= self.ttft_s
        if self.tpot_s is not None:
            ok &= tpot_s <= self.tpot_s
        if self.e2e_s is not None:
            ok &= e2e_s <= self.e2e_s
        return ok


DEFAULT_SLO = SloClass(name="default", ttft_s=2.0, tpot_s=0.1)
DEFAULT_SLOS: dict[str, SloClass] = {"default": DEFAULT_SLO}


class SloConfig(PolicyParams):
    """The SLO classes of a deployment and the class of requests that name none.

    ``classify(prompt_tokens, requested)``: the ``requested`` class when it is a
    configured one (the ``x-cascade-class`` header or ``cascade_class`` body
    field at the ingress); else the class with the smallest ``max_prompt_tokens``
    that is >= the prompt length; else (no class bounds prompts, or the prompt is
    longer than every bound) ``default_class``.
    """

    classes: tuple[SloClass, ...] = (DEFAULT_SLO,)
    default_class: str = "default"

    @model_validator(mode="after")
    def _names(self) -> SloConfig:
        names = [c.name for c in self.classes]
        if not names:
            raise ValueError("at least one SLO class is required")
        for c in self.classes:
            if c.ttft_s is None or c.tpot_s is None:
                raise ValueError(f"class {c.name!r}: a deployment's classes set ttft_s and tpot_s")
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        if self.default_class not in names:
            raise ValueError(f"default_class {self.default_class!r} is not one of {names}")
        return self

    def by_name(self, name: str) -> SloClass:
        """The class called ``name``, else the default class."""
        for c in self.classes:
            if c.name == name:
                return c
        return self.by_name(self.default_class)

    def tightest_tpot_s(self) -> float:
        """The smallest class ``tpot_s`` (s): the TPOT target of a replica that
        serves every class (the ``slo_slack`` prefill budget's, ``replicas.prefill_budget``)."""
        return min(float(c.tpot_s) for c in self.classes if c.tpot_s is not None)

    def table(self) -> dict[str, SloClass]:
        """name → class, as the SLO-aware policies take it."""
        return {c.name: c for c in self.classes}

    def classify(self, prompt_tokens: int, requested: str | None = None) -> str:
        """The class of a request (see the class docstring). O(classes)."""
        if requested is not None and any(c.name == requested for c in self.classes):
            return requested
        best, best_bound = self.default_class, None
        for c in self.classes:
            bound = c.max_prompt_tokens
            if (
                bound is not None
                and prompt_tokens <= bound
                and (best_bound is None or bound < best_bound)
            ):
                best, best_bound = c.name, bound
        return best


def slo_table(slos: Mapping[str, SloClass]) -> dict[str, SloClass]:
    """``{name: class}`` with each class's ``name`` set to its key (a policy
    file's ``slos: {interactive: {ttft_s: ..}}`` names classes by key)."""
    return {k: v if v.name == k else v.model_copy(update={"name": k}) for k, v in slos.items()}


def slo_for(slos: Mapping[str, SloClass], slo_class: str) -> SloClass:
    """The class's SLO, else the ``"default"`` entry, else ``DEFAULT_SLO``. The
    gateway classifies every request into a configured class first, so the
    fallbacks only serve policies used on their own."""
    return slos.get(slo_class) or slos.get("default") or DEFAULT_SLO


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


def meet_probability(pred: LatencyPrediction, slo: SloClass, output_tokens: float) -> FloatArray:
    """P(TTFT ≤ ttft_s and E2E ≤ E2E target) per replica, in [0, 1]."""
    return pred.prob_within(slo.ttft_s, slo.e2e_target_s(output_tokens))
