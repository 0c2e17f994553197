"""``Router``: filters → weighted scorers → picker, producing a ranked list.

This is the one call the Ray Serve router adapter and the simulator make::

    ranking = router.rank(request, view, rng)   # view indices, best first
    ... send to view.replica_ids[ranking[0]] (or the next if it is full) ...
    router.on_routed(replica_id, request)
    ...
    router.on_completed(replica_id, request)

Build one from config with ``policies.build_router`` (a named profile, a dict or
a ``RouterConfig``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from policies.base import Filter, Picker, Scorer
from policies.pickers import MaxScorePicker
from policies.slo import SloClass
from policies.view import IntArray, ReplicaView
from replicas.telemetry import RequestInfo
from uncertainty import CascadeModel
from uncertainty.validation import FloatArray


class Router:
    """A routing profile: ``filters``, ``scorers`` as (scorer, weight ≥ 0) pairs,
    and a ``picker`` (default ``max_score``).

    The combined score of a replica is the weighted mean of its scorer scores
    (Σ wᵢ sᵢ / Σ wᵢ, so it stays in [0, 1]); with no scorer, or all weights 0,
    every replica scores 0 and the picker alone decides.

    Failure modes: ``ValueError`` at construction for a negative or non-finite
    weight. ``rank`` on an empty view, or when a strict filter leaves nothing,
    returns [] (the caller rejects or queues the request).
    """

    def __init__(
        self,
        filters: Sequence[Filter] = (),
        scorers: Sequence[tuple[Scorer, float]] = (),
        picker: Picker | None = None,
        name: str = "custom",
    ) -> None:
        for s, w in scorers:
            if not (np.isfinite(w) and w >= 0):
                raise ValueError(f"scorer {type(s).__name__}: weight {w!r} must be finite and >= 0")
        self.name = name
        self.filters = tuple(filters)
        self.scorers = tuple((s, float(w)) for s, w in scorers if w > 0)
        self.picker = picker or MaxScorePicker()
        self._wsum = sum(w for _, w in self.scorers)

    # ---- the decision -----------------------------------------------------------
    def candidates(self, request: RequestInfo, view: ReplicaView) -> IntArray:
        """View indices that survive the filters (soft filters never empty it)."""
        cand: IntArray = view.indices
        for f in self.filters:
            if cand.size == 0:
                break
            keep = np.asarray(f.keep(request, view, cand), dtype=bool)
            if keep.all():
                continue
            if keep.any() or f.strict:
                cand = cand[keep]
        return cand

    def combined_scores(
        self, request: RequestInfo, view: ReplicaView, candidates: IntArray
    ) -> FloatArray:
        """Weighted mean of the scorers' scores over ``candidates``, in [0, 1]."""
        if not self.scorers:
            return np.zeros(candidates.size)
        if len(self.scorers) == 1:
            return self.scorers[0][0].score(request, view, candidates)
        total = np.zeros(candidates.size)
        for s, w in self.scorers:
            total += w * s.score(request, view, candidates)
        out: FloatArray = total / self._wsum
        return out

    def rank(self, request: RequestInfo, view: ReplicaView, rng: np.random.Generator) -> list[int]:
        """Candidate replicas as view indices, best first; filtered-out ones absent."""
        cand = self.candidates(request, view) if self.filters else view.indices
        if cand.size <= 1:
            return [int(i) for i in cand]
        scores = self.combined_scores(request, view, cand)
        ranked: list[int] = self.picker.order(scores, cand, view, rng).tolist()
        return ranked

    def explain(self, request: RequestInfo, view: ReplicaView) -> dict[str, FloatArray]:
        """Per-scorer scores over all replicas (NaN where filtered out) and the
        combined score: for logs, dashboards and tests."""
        cand = self.candidates(request, view)
        out: dict[str, FloatArray] = {}
        for s, _ in self.scorers:
            full = np.full(view.size, np.nan)
            full[cand] = s.score(request, view, cand)
            out[s.type_name or type(s).__name__] = full
        full = np.full(view.size, np.nan)
        full[cand] = self.combined_scores(request, view, cand)
        out["combined"] = full
        return out

    # ---- feedback and model updates ----------------------------------------------
    def _components(self) -> tuple[Filter | Scorer | Picker, ...]:
        return (*self.filters, *(s for s, _ in self.scorers), self.picker)

    def on_routed(self, replica_id: str, request: RequestInfo) -> None:
        """Tell stateful components (round robin, prefix tracking) where it went."""
        for c in self._components():
            c.on_routed(replica_id, request)

    def on_completed(self, replica_id: str, request: RequestInfo) -> None:
        for c in self._components():
            c.on_completed(replica_id, request)

    def set_cascade_model(self, model: CascadeModel) -> None:
        """Give scorers that predict latency the controller's fitted model."""
        for c in self._components():
            setter = getattr(c, "set_cascade_model", None)
            if setter is not None:
                setter(model)

    def set_running_output_tokens(self, tokens: float) -> None:
        """Give scorers that weigh the requests already running (the
        ``expected_slo`` objective) their learned mean output length."""
        for c in self._components():
            setter = getattr(c, "set_running_output_tokens", None)
            if setter is not None:
                setter(tokens)

    def set_output_lengths(self, model: object) -> None:
        """Give scorers that weigh output lengths (``tail_protect``) the
        gateway's learned ``OutputLengthModel``."""
        for c in self._components():
            setter = getattr(c, "set_output_lengths", None)
            if setter is not None:
                setter(model)

    def set_slos(self, slos: dict[str, SloClass]) -> None:
        """Give SLO-aware scorers the deployment's SLO table."""
        for c in self._components():
            setter = getattr(c, "set_slos", None)
            if setter is not None:
                setter(slos)

    def __repr__(self) -> str:
        filters = ", ".join(f.type_name for f in self.filters)
        scorers = ", ".join(f"{s.type_name}×{w:g}" for s, w in self.scorers)
        return (
            f"Router({self.name!r}: filters=[{filters}], scorers=[{scorers}], "
            f"picker={self.picker.type_name})"
        )
