"""Pickers: turn combined scores into a ranking of the candidates, best first.

A router returns a full ranking (not one replica) because Ray Serve's
``choose_replicas`` tries replicas in rank order when the first one is at its
``max_ongoing_requests``; the simulator takes the first.
"""

from __future__ import annotations

import bisect

import numpy as np

from policies.base import Picker
from policies.registry import PICKERS
from policies.view import IntArray, ReplicaView
from replicas.telemetry import RequestInfo
from uncertainty.validation import FloatArray

# Scores within this distance count as tied: small against any meaningful score
# difference (scores are in [0, 1]), large against rounding (~1e-16).
_TIE_TOLERANCE = 1e-12


@PICKERS.register("max_score")
class MaxScorePicker(Picker):
    """Highest score first. A tie for the first place (scores within 1e-12) is
    broken uniformly at random over the whole ranking, so equal replicas share
    traffic instead of the first one taking all of it; below a unique leader,
    equal scores keep the sort's order.

    YAML: ``picker: max_score``
    """

    def order(
        self, scores: FloatArray, candidates: IntArray, view: ReplicaView, rng: np.random.Generator
    ) -> IntArray:
        idx: IntArray = scores.argsort()
        n = idx.size
        if n >= 2 and scores[idx[n - 1]] - scores[idx[n - 2]] <= _TIE_TOLERANCE:
            # ascending sort of −score − 1e-12·u, u ~ U[0, 1): a random order
            # among scores within the tolerance (about twice the cost of the
            # plain sort, so only when the leader is tied: the router's hot path)
            key = rng.random(n)
            key *= -_TIE_TOLERANCE
            key -= scores
            idx = key.argsort()
        else:
            idx = idx[::-1]  # descending
        if candidates is view.indices:  # every replica, in view order
            return idx
        out: IntArray = candidates[idx]
        return out


@PICKERS.register("random")
class RandomPicker(Picker):
    """A uniformly random ranking (scores ignored): the ``random`` baseline.

    YAML: ``picker: random``
    """

    def order(
        self, scores: FloatArray, candidates: IntArray, view: ReplicaView, rng: np.random.Generator
    ) -> IntArray:
        out: IntArray = rng.permutation(candidates)
        return out


@PICKERS.register("weighted_random")
class WeightedRandomPicker(Picker):
    """Random ranking drawn proportionally to score, without replacement
    (Efraimidis–Spirakis keys u^(1/w)); zero-score replicas come last, in random
    order. llm-d's weighted random picker.

    YAML: ``picker: weighted_random``
    """

    def order(
        self, scores: FloatArray, candidates: IntArray, view: ReplicaView, rng: np.random.Generator
    ) -> IntArray:
        u = rng.random(scores.size)
        with np.errstate(divide="ignore"):
            # log-key log(u)/w: larger is earlier; w = 0 → −inf (last)
            keys = np.where(
                scores > 0, np.log(np.maximum(u, 1e-300)) / np.maximum(scores, 1e-300), -np.inf
            )
        idx = np.lexsort((u, -keys))
        out: IntArray = candidates[idx]
        return out


@PICKERS.register("pow2")
class PowerOfTwoPicker(Picker):
    """Power of two choices (Ray Serve's default router): sample two candidates
    uniformly, the better-scored first; the others follow in random order (what
    Ray does when both are full: sample again).

    YAML: ``picker: pow2`` (pair it with the ``least_outstanding`` scorer)
    """

    def order(
        self, scores: FloatArray, candidates: IntArray, view: ReplicaView, rng: np.random.Generator
    ) -> IntArray:
        perm = rng.permutation(candidates.size)
        if perm.size >= 2 and scores[perm[1]] > scores[perm[0]]:
            perm[0], perm[1] = perm[1], perm[0]
        out: IntArray = candidates[perm]
        return out


@PICKERS.register("round_robin")
class RoundRobinPicker(Picker):
    """Round robin over replica ids (scores ignored): the replica after the one
    last routed to, in id order, comes first.

    Keyed by id rather than position, so replicas joining or leaving do not
    restart the cycle. The cursor advances in ``on_routed``: a caller that ranks
    without routing (a retry, a dry run) does not skip anyone.

    YAML: ``picker: round_robin``
    """

    def __init__(self) -> None:
        self._last: str | None = None
        # id order of the last view's replicas: membership rarely changes, so the
        # string sort runs once per membership (the tuple compare is cheap)
        self._ids_key: tuple[str, ...] | None = None
        self._sorted: tuple[list[str], IntArray] | None = None

    def _id_order(self, view: ReplicaView) -> tuple[list[str], IntArray]:
        if self._sorted is None or self._ids_key != view.replica_ids:
            ids = view.replica_ids
            by_id: IntArray = np.array(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.intp)
            self._ids_key, self._sorted = ids, ([ids[i] for i in by_id], by_id)
        return self._sorted

    def order(
        self, scores: FloatArray, candidates: IntArray, view: ReplicaView, rng: np.random.Generator
    ) -> IntArray:
        if candidates.size == view.size:
            sorted_ids, ranked = self._id_order(view)
        else:
            ids = view.replica_ids
            ranked = np.array(sorted(candidates.tolist(), key=ids.__getitem__), dtype=np.intp)
            sorted_ids = [ids[i] for i in ranked]
        if self._last is None:
            return ranked
        # first position (in id order) strictly after the last routed id; string
        # bisection on a list (numpy's searchsorted on strings converts the key
        # to a unicode array first, and np.roll is ~10 numpy calls)
        start = bisect.bisect_right(sorted_ids, self._last)
        out: IntArray = np.concatenate((ranked[start:], ranked[:start]))
        return out

    def on_routed(self, replica_id: str, request: RequestInfo) -> None:
        self._last = replica_id
