"""The slow decision with memory: replicas per pool that do not flap.

:class:`Allocator` wraps :class:`optim.allocation.AllocationProblem` with two
guards, both driven by an injected clock (the ``now`` argument; nothing here
reads the wall clock):

* **Confidence band.** The arrival rates are estimates with a confidence
  interval (``ProblemInputs.arrival_rate_ci_per_s``, from the ``uncertainty``
  estimators). The allocator also searches at the interval's ends
  (``λ - ci`` and ``λ + ci``); a pool whose current replicas lie between the
  answers there is held: the data cannot tell that a move is needed.
* **Cooldown.** A pool that changed less than ``up_cooldown_s`` (growing) or
  ``down_cooldown_s`` (shrinking) ago is held.

Pool bounds and GPU budgets are hard: they override both guards. A pool whose
current allocation misses the SLOs at the point estimate skips the band (not
the cooldown).

"Current" is the allocation in force: the targets last set (``decide``'s
``current``), not the replicas that happen to be alive. A guard that holds a pool
keeps its target; it never lowers it to the live count, so a replica lost with
its node, or one still starting, is asked for again rather than written off
(with the live count a held pool's target fell to whatever survived, and a
scale-up still in progress was undone).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from optim.allocation import AllocationProblem, SearchResult
from optim.checks import FloatArray
from optim.inputs import ProblemInputs
from optim.results import AllocationResult, SolveStatus

HOLD_BAND = "confidence_interval"
HOLD_COOLDOWN = "cooldown"
HOLD_BUDGET = "budget"


@dataclass(frozen=True)
class HysteresisConfig:
    """Anti-flapping settings (seconds of the injected clock).

    Attributes:
        up_cooldown_s: minimum time between a pool's change and its next increase.
        down_cooldown_s: minimum time between a pool's change and its next decrease
            (longer: removing a replica is cheap to regret, adding one is slow).
        confidence_band: search at the rate interval's ends and hold inside them.
    """

    up_cooldown_s: float = 30.0
    down_cooldown_s: float = 120.0
    confidence_band: bool = True

    def __post_init__(self) -> None:
        for name in ("up_cooldown_s", "down_cooldown_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")


class Allocator:
    """Decides replicas per pool every ~30-60 s (see module doc). Not thread-safe."""

    def __init__(self, problem: AllocationProblem, config: HysteresisConfig | None = None) -> None:
        self.problem = problem
        self.config = config or HysteresisConfig()
        self._last_change_s = np.full(len(problem.pools), -np.inf)

    def decide(
        self, inputs: ProblemInputs, now: float, current: Sequence[float] | None = None
    ) -> AllocationResult:
        """Target replicas for ``inputs`` at time ``now`` (seconds, injected clock).

        ``current``: per pool, the targets in force (what the last decision, or
        the operator's start, asked for); the guards hold a pool there and the
        cooldown counts from changes to it. Default: ``inputs.replicas`` (the live
        replicas, which the routing problem uses as capacity either way).

        Never raises for solver trouble: an infeasible search proposes the most
        capacity the budget allows; a failed one proposes the current targets.

        Raises:
            ValueError: if ``inputs`` do not match the problem's pools and classes,
                or ``current`` has another length or a non-finite entry.
        """
        start = time.perf_counter()
        problem = self.problem
        in_force = inputs.replicas if current is None else np.asarray(current, dtype=np.float64)
        if in_force.shape != (len(problem.pools),) or not np.all(np.isfinite(in_force)):
            raise ValueError(
                f"current must hold one finite count per pool ({len(problem.pools)}), "
                f"got {in_force.tolist()}"
            )
        held_at = np.clip(in_force, problem.n_min, problem.n_max)
        point = problem.search(inputs)
        proposed, status, objective = self._proposal(point, held_at)
        low, high = proposed.copy(), proposed.copy()
        if self.config.confidence_band and np.any(inputs.rate_ci > 0):
            for sign in (-1.0, 1.0):
                rates = np.maximum(inputs.arrival_rate_per_s + sign * inputs.rate_ci, 0.0)
                alt, _, _ = self._proposal(
                    problem.search(inputs.replace(arrival_rate_per_s=rates)), held_at
                )
                low, high = np.minimum(low, alt), np.maximum(high, alt)
        current_ok = self._current_meets_slo(point, held_at)
        final, held = self._apply_guards(held_at, proposed, low, high, current_ok, now)
        routing = problem.routing.solve(inputs, replicas=final)
        changed = final != in_force
        self._last_change_s = np.where(changed, now, self._last_change_s)
        return AllocationResult(
            status=status,
            replicas=_readonly(final),
            proposed=_readonly(proposed),
            objective=objective,
            cost_per_hour=problem.cost_per_hour(final),
            lower_bound=point.lower_bound,
            routing=routing,
            held=held,
            allocation_ms=(time.perf_counter() - start) * 1e3,
            evaluations=len(point.evaluated),
            message=point.message,
        )

    def _proposal(
        self, result: SearchResult, current: FloatArray
    ) -> tuple[FloatArray, SolveStatus, float]:
        if result.best is not None:
            n = np.array(result.best.replicas, dtype=np.float64)
            return n, result.status, result.best.total
        if result.status is SolveStatus.INFEASIBLE:
            return self.problem.max_capacity(), result.status, float("inf")
        return current.copy(), result.status, float("nan")

    def _current_meets_slo(self, result: SearchResult, current: FloatArray) -> bool:
        key = tuple(int(v) for v in current)
        if key in result.evaluated:
            return bool(np.isfinite(result.evaluated[key].total))
        return True  # not evaluated: no evidence that it misses

    def _apply_guards(
        self,
        current: FloatArray,
        proposed: FloatArray,
        low: FloatArray,
        high: FloatArray,
        current_ok: bool,
        now: float,
    ) -> tuple[FloatArray, tuple[str, ...]]:
        cfg = self.config
        final = current.copy()
        held = [""] * len(current)
        since = now - self._last_change_s
        for p, (cur, want) in enumerate(zip(current, proposed, strict=True)):
            if want == cur:
                continue
            growing = want > cur
            if current_ok and low[p] <= cur <= high[p]:
                held[p] = HOLD_BAND
            elif since[p] < (cfg.up_cooldown_s if growing else cfg.down_cooldown_s):
                held[p] = HOLD_COOLDOWN
            else:
                final[p] = want
        # Budgets are hard: undo increases, largest GPU users first, until they hold.
        problem = self.problem
        for i in range(len(problem.types)):
            grown = [p for p in range(len(final)) if final[p] > current[p] and problem.gpus[i, p]]
            grown.sort(key=lambda p: -problem.gpus[i, p] * (final[p] - current[p]))
            while problem.gpus[i] @ final > problem.budget[i] + 1e-9 and grown:
                p = grown.pop(0)
                final[p], held[p] = current[p], HOLD_BUDGET
        if not problem.within_budget(final):
            final = proposed.copy()  # the current allocation itself breaks a limit
            held = [""] * len(current)
        return final, tuple(held)


def _readonly(a: FloatArray) -> FloatArray:
    a.flags.writeable = False
    return a
