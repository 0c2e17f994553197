"""The slow decision's search: integer replicas per pool.

``J(n) = min_x objective(x; n) + cost_weight · Σ_p n_p · $/h_p``, subject to the
SLO rows and caps, with ``n`` integer within each pool's bounds and the GPUs
per type. Because the model is in perspective form, ``J`` is the partial
minimum of a jointly convex function, so its continuous relaxation is a convex
program (solved once, DPP-compiled) whose optimum is a lower bound, and integer
points near it are good candidates. The search:

1. solve the relaxation (free ``n``) → ``n*`` and the lower bound;
2. evaluate the roundings of ``n*`` (all floor/ceil combinations for up to
   :data:`FULL_ROUNDING_POOLS` pools, else nearest and ceiling), clipped to bounds
   and repaired into the GPU budget, with the routing problem (``n`` pinned);
3. local search: first-improving ±1 moves (toward the relaxed optimum first) and,
   where a GPU budget blocks an increase, one-for-one moves between pools of that
   type, until no move improves or ``max_evaluations`` is spent.

Every evaluation is a DPP re-solve of the routing problem, so the search costs a
few ms per candidate at controller sizes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from optim.checks import FloatArray
from optim.engine import Engine
from optim.formulation import build, gpu_types, parameter_values
from optim.inputs import ProblemInputs
from optim.model import eligible_pairs, predict
from optim.options import SolverOptions
from optim.results import RoutingResult, SolveStatus
from optim.routing import RoutingProblem, check_shapes
from optim.specs import ClassSpec, PoolSpec

# Up to this many pools, every floor/ceil combination of the relaxation is tried.
FULL_ROUNDING_POOLS = 4
# Relaxation slack above this (SLOs × replicas) means its SLO rows were not met.
_SLACK_TOL = 1e-6


@dataclass(frozen=True)
class Evaluation:
    """``J(n)`` for one integer allocation: total objective (inf if infeasible) and routing."""

    replicas: tuple[int, ...]
    total: float
    routing: RoutingResult


@dataclass(frozen=True)
class SearchResult:
    """Outcome of :meth:`AllocationProblem.search`.

    ``best`` is ``None`` when no evaluated allocation met the SLOs.
    ``lower_bound`` is the relaxation's objective (``nan`` when it failed or
    needed SLO slack). ``evaluated`` holds every allocation tried.
    """

    status: SolveStatus
    best: Evaluation | None
    lower_bound: float
    relaxed_replicas: FloatArray | None
    evaluated: dict[tuple[int, ...], Evaluation]
    message: str = ""


class AllocationProblem:
    """Integer replicas per pool minimizing variance plus GPU cost (see module doc).

    Args:
        pools, classes: the deployment (same order as the inputs' arrays).
        gpu_limits: GPUs of each type the cluster has or may add (``{"H100": 16}``);
            types not listed are limited only by the pools' ``max_replicas``.
        cost_weight: objective units (s²) per $/hour — the price of variance.
        options: solver settings.
        max_evaluations: cap on routing solves per search (local search stops there).

    Raises:
        ValueError: for a negative limit or weight, or a budget below the pools' minimums.
    """

    def __init__(
        self,
        pools: Sequence[PoolSpec],
        classes: Sequence[ClassSpec],
        *,
        gpu_limits: Mapping[str, int] | None = None,
        cost_weight: float = 0.0,
        options: SolverOptions | None = None,
        max_evaluations: int = 64,
    ) -> None:
        self.routing = RoutingProblem(pools, classes, options)
        self.pools, self.classes = self.routing.pools, self.routing.classes
        if not (np.isfinite(cost_weight) and cost_weight >= 0):
            raise ValueError(f"cost_weight must be finite and >= 0, got {cost_weight}")
        if max_evaluations < 1:
            raise ValueError(f"max_evaluations must be >= 1, got {max_evaluations}")
        self.cost_weight = float(cost_weight)
        self.max_evaluations = max_evaluations
        self.n_min = np.array([p.min_replicas for p in self.pools], dtype=np.float64)
        self.n_max = np.array([p.max_replicas for p in self.pools], dtype=np.float64)
        self.types = gpu_types(self.pools)
        self.gpus = np.array(
            [[p.tp_size if p.gpu_type == t else 0 for p in self.pools] for t in self.types],
            dtype=np.float64,
        )
        limits = dict(gpu_limits or {})
        for name, value in limits.items():
            if value < 0:
                raise ValueError(f"gpu_limits[{name!r}] must be >= 0, got {value}")
        # An unlisted type is bounded by its pools' maximums, which is no constraint.
        self.budget = np.array(
            [float(limits.get(t, self.gpus[i] @ self.n_max)) for i, t in enumerate(self.types)]
        )
        short = self.gpus @ self.n_min > self.budget
        if short.any():
            t = self.types[int(np.argmax(short))]
            raise ValueError(f"gpu_limits[{t!r}] is below the GPUs the pools' min_replicas need")
        self.replica_cost = np.array([p.replica_cost_per_hour for p in self.pools])
        self._relaxation = Engine(
            build(self.pools, self.classes, free_replicas=True, slack=True),
            self.routing.options,
        )

    def cost_per_hour(self, replicas: FloatArray) -> float:
        """$/hour of an allocation."""
        return float(self.replica_cost @ replicas)

    def within_budget(self, replicas: FloatArray) -> bool:
        """Within every pool's bounds and every GPU type's limit."""
        return bool(
            np.all(replicas >= self.n_min)
            and np.all(replicas <= self.n_max)
            and np.all(self.gpus @ replicas <= self.budget + 1e-9)
        )

    def evaluate(self, inputs: ProblemInputs, replicas: Sequence[int]) -> Evaluation:
        """``J(n)``: best routing with these replicas, plus the cost term."""
        n = np.asarray(replicas, dtype=np.float64)
        routing = self.routing.solve(inputs, replicas=n)
        total = (
            routing.objective + self.cost_weight * self.cost_per_hour(n)
            if routing.status.ok
            else float("inf")
        )
        return Evaluation(tuple(int(v) for v in replicas), total, routing)

    def relax(self, inputs: ProblemInputs) -> tuple[FloatArray | None, float, str]:
        """Continuous relaxation: (replicas, lower bound, message); (None, nan, why) on failure."""
        check_shapes(self.pools, self.classes, inputs)
        mask = eligible_pairs(self.classes, inputs, self.n_max > 0)
        if not mask.any(axis=1).all():
            return None, float("nan"), "a class has no pool that meets its SLO even when idle"
        values = parameter_values(
            self.pools,
            self.classes,
            inputs,
            mask,
            cost_per_replica=self.cost_weight * self.replica_cost,
        )
        values.update(n_lo=self.n_min, n_hi=self.n_max, budget=self.budget)
        outcome = self._relaxation.solve(values)
        if outcome.values is None:
            return None, float("nan"), f"relaxation: {outcome.solver_status}"
        n = np.clip(outcome.values["n"], self.n_min, self.n_max)
        if float(np.max(outcome.values["slack"])) > _SLACK_TOL:
            return n, float("nan"), "relaxation needed SLO slack (SLOs unreachable)"
        x = np.clip(outcome.values["x"], 0.0, None)
        x /= x.sum(axis=1, keepdims=True)
        bound = predict(self.pools, self.classes, inputs, x, n).objective
        return n, bound + self.cost_weight * self.cost_per_hour(n), ""

    def search(self, inputs: ProblemInputs) -> SearchResult:
        """Best integer allocation found (see the module doc). Never raises for solver
        trouble; ``status`` is INFEASIBLE when no allocation tried met the SLOs."""
        relaxed, bound, message = self.relax(inputs)
        seen: dict[tuple[int, ...], Evaluation] = {}

        def value(n: tuple[int, ...]) -> float:
            if n not in seen:
                seen[n] = self.evaluate(inputs, n)
            return seen[n].total

        current = tuple(int(v) for v in np.clip(inputs.replicas, self.n_min, self.n_max))
        starts = [current] if self.within_budget(np.array(current, dtype=np.float64)) else []
        if relaxed is not None:
            starts = [*self._roundings(relaxed), *starts]
        if not starts:
            starts = [self._repair(np.ceil(self.n_min))]
        for n in starts:
            if len(seen) >= self.max_evaluations:
                break
            value(n)
        best = min(seen, key=lambda k: seen[k].total)
        # First-improvement local search, most promising moves first: at 64 pools
        # a full neighbourhood is hundreds of routing solves.
        target = relaxed if relaxed is not None else np.array(best, dtype=np.float64)
        improved = True
        while improved and len(seen) < self.max_evaluations:
            improved = False
            for m in self._neighbours(best, target):
                if m in seen:
                    continue
                if len(seen) >= self.max_evaluations:
                    break
                if value(m) < seen[best].total:
                    best, improved = m, True
                    break
        if not np.isfinite(seen[best].total):
            why = message or "no allocation tried meets the SLOs"
            return SearchResult(SolveStatus.INFEASIBLE, None, bound, relaxed, seen, why)
        status = seen[best].routing.status
        return SearchResult(status, seen[best], bound, relaxed, seen, message)

    def brute_force(self, inputs: ProblemInputs) -> Evaluation | None:
        """Exhaustive search over every integer allocation (small instances only)."""
        best: Evaluation | None = None
        bounds = zip(self.n_min, self.n_max, strict=True)
        ranges = [range(int(lo), int(hi) + 1) for lo, hi in bounds]
        for n in itertools.product(*ranges):
            if not self.within_budget(np.array(n, dtype=np.float64)):
                continue
            ev = self.evaluate(inputs, n)
            if np.isfinite(ev.total) and (best is None or ev.total < best.total):
                best = ev
        return best

    def max_capacity(self) -> FloatArray:
        """The most replicas the bounds and budgets allow (the infeasible-case target)."""
        return np.array(self._repair(self.n_max), dtype=np.float64)

    def _roundings(self, relaxed: FloatArray) -> list[tuple[int, ...]]:
        floor, ceil = np.floor(relaxed + 1e-6), np.ceil(relaxed - 1e-6)
        if len(self.pools) <= FULL_ROUNDING_POOLS:
            combos = [
                np.where(bits, ceil, floor)
                for bits in itertools.product((False, True), repeat=len(self.pools))
            ]
        else:
            combos = [np.round(relaxed), ceil]
        out: list[tuple[int, ...]] = []
        for n in combos:
            repaired = self._repair(np.clip(n, self.n_min, self.n_max))
            if repaired not in out:
                out.append(repaired)
        return out

    def _repair(self, n: FloatArray) -> tuple[int, ...]:
        """Bring ``n`` within the GPU budgets by removing replicas from the largest pools."""
        n = np.clip(n.copy(), self.n_min, self.n_max)
        for i in range(len(self.types)):
            while self.gpus[i] @ n > self.budget[i] + 1e-9:
                room = np.flatnonzero((self.gpus[i] > 0) & (n > self.n_min))
                if room.size == 0:
                    break
                n[room[np.argmax(n[room] * self.gpus[i, room])]] -= 1
        return tuple(int(v) for v in n)

    def _neighbours(self, n: tuple[int, ...], target: FloatArray) -> Iterator[tuple[int, ...]]:
        """Moves within bounds and budgets, most promising first.

        ±1 on one pool, those toward the relaxed optimum ``target`` first (largest
        distance first); then, where a GPU type's budget blocks a +1, one-for-one
        moves between pools of that type.
        """
        base = np.array(n, dtype=np.float64)
        p_n = len(n)
        steps = sorted(
            ((p, d) for p in range(p_n) for d in (-1, 1)),
            key=lambda pd: -pd[1] * (target[pd[0]] - base[pd[0]]),
        )
        blocked = []
        for p, d in steps:
            m = base.copy()
            m[p] += d
            if self.within_budget(m):
                yield tuple(int(v) for v in m)
            elif d > 0 and m[p] <= self.n_max[p]:
                blocked.append(p)  # only a GPU budget stops this increase
        for q in blocked:
            same_type = self.gpus[:, q] @ self.gpus > 0
            for p in np.flatnonzero(same_type):
                if p == q:
                    continue
                m = base.copy()
                m[p] -= 1
                m[q] += 1
                if self.within_budget(m):
                    yield tuple(int(v) for v in m)
