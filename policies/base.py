"""The three routing extension points: ``Filter``, ``Scorer``, ``Picker``.

A ``Router`` runs filters (each drops replicas), then scorers (each gives every
remaining replica a score in [0, 1]; the router takes the weighted mean), then a
picker (turns scores into a ranking, best first). Each is one small interface;
implementations register under a config ``type`` name (``policies.registry``).

All three see candidates as indices into a ``ReplicaView``; none may mutate the
view. Stateful components (round robin, router-local prefix tracking) learn from
the feedback hooks ``on_routed`` / ``on_completed``, which default to no-ops.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import numpy as np

from policies.params import PolicyParams
from policies.view import IntArray, ReplicaView
from replicas.telemetry import RequestInfo
from uncertainty.validation import FloatArray


class Component:
    """What every routing component shares: params, a builder and feedback hooks."""

    Params: ClassVar[type[PolicyParams]] = PolicyParams
    type_name: ClassVar[str] = ""

    @classmethod
    def from_params(cls, params: Any) -> Self:
        """Build from a validated ``Params`` instance (the default: no params)."""
        return cls()

    def on_routed(self, replica_id: str, request: RequestInfo) -> None:
        """``request`` was sent to ``replica_id`` (called once per routed request)."""

    def on_completed(self, replica_id: str, request: RequestInfo) -> None:
        """``request`` finished (or failed) on ``replica_id``."""


class Filter(Component, ABC):
    """Drops replicas. ``keep`` returns a boolean mask over ``candidates``.

    A filter is *soft* unless its params say ``strict: true``: when it would drop
    every remaining candidate the router ignores it (a degraded cluster still
    serves); a strict filter can leave no candidate, and ``rank`` returns [].
    """

    strict: bool = False

    @abstractmethod
    def keep(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> np.ndarray:
        """Boolean array, same length as ``candidates``: True = keep."""


class Scorer(Component, ABC):
    """Scores replicas: values in [0, 1], higher is better, one per candidate."""

    @abstractmethod
    def score(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> FloatArray:
        """Float array, same length as ``candidates``, every value in [0, 1]."""


class Picker(Component, ABC):
    """Turns combined scores into a ranking of the candidates, best first."""

    @abstractmethod
    def order(
        self,
        scores: FloatArray,
        candidates: IntArray,
        view: ReplicaView,
        rng: np.random.Generator,
    ) -> IntArray:
        """A permutation of ``candidates`` (view indices), best first.

        ``scores[i]`` belongs to ``candidates[i]`` and lies in [0, 1].
        """


def min_max_lower_is_better(cost: FloatArray) -> FloatArray:
    """Score = (max − cost) / (max − min): 1 for the cheapest candidate, 0 for the
    dearest, all 1 when they are equal (llm-d's queue scorer normalisation)."""
    if cost.size == 0:
        return cost.astype(np.float64)
    lo = float(cost.min())
    hi = float(cost.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.ones(cost.size)
    out: FloatArray = (hi - cost) / (hi - lo)
    return out
