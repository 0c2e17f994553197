"""The fast decision: routing fractions x[c, p] with replicas fixed.

Build a :class:`RoutingProblem` once per deployment (pools and classes); call
:meth:`RoutingProblem.solve` every few seconds with fresh telemetry. A solve
writes parameter values only (DPP), and never raises for solver trouble: an
infeasible or failed solve returns a typed status with a fallback plan.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from optim.checks import BoolArray, FloatArray
from optim.cvx import cp
from optim.engine import Engine
from optim.fallback import proportional_to_capacity, still_valid
from optim.formulation import build, parameter_values
from optim.inputs import ProblemInputs
from optim.model import FEASIBILITY_TOL, Prediction, eligible_pairs, predict
from optim.options import SolverOptions
from optim.results import Fallback, RoutingResult, SolveStatus
from optim.specs import ClassSpec, PoolSpec, check_unique_names

# Routing weights below this (0.01 % of a class) are interior-point noise: zeroed.
USED_TOL = 1e-4
# An unused pair whose tail is within this fraction of its SLO "blocks" its pool.
_BINDING = 1e-3


def check_shapes(
    pools: Sequence[PoolSpec], classes: Sequence[ClassSpec], inputs: ProblemInputs
) -> None:
    """Refuse inputs built for a different set of pools/classes.

    Raises:
        ValueError: naming both sizes.
    """
    if (inputs.num_classes, inputs.num_pools) != (len(classes), len(pools)):
        raise ValueError(
            f"inputs are for {inputs.num_classes} classes x {inputs.num_pools} pools, "
            f"the problem for {len(classes)} x {len(pools)}"
        )


def clean_plan(x: FloatArray, mask: BoolArray) -> FloatArray:
    """Clip solver noise: negatives and tiny weights to 0, unusable pairs to 0, rows to 1."""
    plan = np.where(mask & (x > USED_TOL), x, 0.0)
    sums = plan.sum(axis=1, keepdims=True)
    out: FloatArray = np.divide(plan, sums, out=np.zeros_like(plan), where=sums > 0)
    return out


class RoutingProblem:
    """Variance-minimizing routing under SLO chance constraints (see docs/optimizer.md).

    Construction builds the cvxpy problem (asserting DPP); the first
    :meth:`solve` compiles it (tens of ms); later solves only write values.
    Holds the last feasible plan for fallback, so one instance serves one
    controller loop (not thread-safe).

    Raises:
        ValueError: on construction, for empty or duplicated pool/class names.
    """

    def __init__(
        self,
        pools: Sequence[PoolSpec],
        classes: Sequence[ClassSpec],
        options: SolverOptions | None = None,
    ) -> None:
        self.pools, self.classes = tuple(pools), tuple(classes)
        check_unique_names(self.pools, self.classes)
        self.options = options or SolverOptions()
        self.formulation = build(self.pools, self.classes, free_replicas=False)
        self._engine = Engine(self.formulation, self.options)
        # The phase-1 variant (priced SLO slack) is built only if a solve needs it.
        self._phase1: Engine | None = None
        self._last_feasible: FloatArray | None = None
        self._last_feasible_replicas: FloatArray | None = None  # what it was solved with

    @property
    def is_dpp(self) -> bool:
        """The compiled problem follows cvxpy's DPP rules (re-solves do not recompile)."""
        return bool(cp.Problem.is_dcp(self.formulation.problem, dpp=True))

    @property
    def fast_path_active(self) -> bool:
        return self._engine.fast_path_active

    def solve(self, inputs: ProblemInputs, replicas: FloatArray | None = None) -> RoutingResult:
        """Best routing for ``inputs`` (with ``replicas`` overriding ``inputs.replicas``).

        Never raises for an infeasible or failed solve: the result's ``status``
        says what happened and ``x`` is then the last feasible plan (if still
        usable: ``fallback.still_valid``, which refuses it once a pool it uses has
        lost replicas) or capacity-proportional routing.

        Raises:
            ValueError: if ``inputs`` (or ``replicas``) have the wrong shape or
                ``replicas`` holds negative/non-integer values — a wiring bug,
                not a runtime condition.
        """
        start = time.perf_counter()
        check_shapes(self.pools, self.classes, inputs)
        if replicas is not None:
            inputs = inputs.replace(replicas=replicas)
        result = self._solve(inputs)
        elapsed = (time.perf_counter() - start) * 1e3
        return _with_time(result, elapsed)

    def _solve(self, inputs: ProblemInputs) -> RoutingResult:
        mask = eligible_pairs(self.classes, inputs, inputs.replicas > 0)
        homeless = np.flatnonzero(~mask.any(axis=1))
        if homeless.size:
            names = ", ".join(self.classes[c].name for c in homeless)
            return self._fallback(
                inputs,
                SolveStatus.INFEASIBLE,
                "not solved",
                0,
                f"no pool can meet the SLO of class(es) {names} even when idle",
            )
        best: tuple[FloatArray, Prediction, SolveStatus] | None = None
        solver_word, rounds = "not solved", 0
        for _ in range(1 + self.options.release_rounds):
            values = parameter_values(self.pools, self.classes, inputs, mask)
            values["n_fix"] = inputs.replicas
            outcome = self._engine.solve(values)
            rounds += 1
            if outcome.status is SolveStatus.INFEASIBLE and self.options.release_rounds:
                # Phase 1: the same rows with priced slack say which pairs conflict.
                outcome = self._phase1_engine().solve(values)
                rounds += 1
            solver_word = outcome.solver_status
            if outcome.values is None:
                if best is None:
                    return self._fallback(
                        inputs,
                        outcome.status,
                        solver_word,
                        rounds,
                        f"solver returned {solver_word}",
                    )
                break
            plan = clean_plan(outcome.values["x"], mask)
            pred = predict(self.pools, self.classes, inputs, plan)
            if pred.feasible and (best is None or pred.objective < best[1].objective):
                best = (plan, pred, outcome.status)
            if best is not None and not self.options.refine:
                break
            mask, changed = self._release(mask, plan, pred)
            if not changed or not mask.any(axis=1).all():
                break
        if best is None:
            return self._fallback(
                inputs,
                SolveStatus.INFEASIBLE,
                solver_word,
                rounds,
                "the SLOs cannot all be met with these replicas and caps",
            )
        plan, pred, status = best
        plan.flags.writeable = False
        self._last_feasible = plan
        self._last_feasible_replicas = np.array(inputs.replicas, dtype=np.float64)
        return RoutingResult(
            status=status,
            x=plan,
            objective=pred.objective,
            prediction=pred,
            solve_ms=0.0,
            fallback=Fallback.NONE,
            solver_status=solver_word,
            rounds=rounds,
        )

    def _phase1_engine(self) -> Engine:
        if self._phase1 is None:
            form = build(self.pools, self.classes, free_replicas=False, slack=True)
            self._phase1 = Engine(form, self.options)
        return self._phase1

    def _release(
        self, mask: BoolArray, plan: FloatArray, pred: Prediction
    ) -> tuple[BoolArray, bool]:
        """Pairs to take out of the SLO rows before another round, and whether any were.

        The SLO rows hold for every usable pair, used or not (the convex
        restriction of "if traffic goes there, it meets the SLO"). An unused pair
        whose row is binding or violated only restricts its pool, so it is
        released first. Otherwise used pairs that violate their SLO are released
        so that their class goes elsewhere — except, for a class with no other
        usable pair, the one closest to its SLO (a class must keep a home).
        """
        slo = np.array([c.slo_s for c in self.classes])[:, None]
        ratio = pred.latency_tail_s / slo
        unused = plan <= USED_TOL
        blocking = mask & unused & (ratio >= 1 - _BINDING)
        if blocking.any():
            return mask & ~blocking, True
        violating = mask & ~unused & (ratio > 1 + FEASIBILITY_TOL)
        for c in np.flatnonzero(violating.any(axis=1)):
            if not (mask[c] & ~violating[c]).any():
                keep = int(np.argmin(np.where(violating[c], ratio[c], np.inf)))
                violating[c, keep] = False
        if violating.any():
            return mask & ~violating, True
        return mask, False

    def _fallback(
        self,
        inputs: ProblemInputs,
        status: SolveStatus,
        solver_word: str,
        rounds: int,
        message: str,
    ) -> RoutingResult:
        if self._last_feasible is not None and still_valid(
            self._last_feasible, inputs, self._last_feasible_replicas
        ):
            plan, kind = self._last_feasible, Fallback.LAST_FEASIBLE
        else:
            plan, kind = proportional_to_capacity(inputs), Fallback.PROPORTIONAL
            plan.flags.writeable = False
        pred = predict(self.pools, self.classes, inputs, plan)
        return RoutingResult(
            status=status,
            x=plan,
            objective=pred.objective,
            prediction=pred,
            solve_ms=0.0,
            fallback=kind,
            solver_status=solver_word,
            rounds=rounds,
            message=message,
        )


def _with_time(result: RoutingResult, elapsed_ms: float) -> RoutingResult:
    return replace(result, solve_ms=elapsed_ms)
