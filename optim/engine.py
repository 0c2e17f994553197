"""One compiled formulation plus the way to solve it, with solver trouble made typed.

:class:`Engine` hides whether a solve went through the fast path
(:mod:`optim.compiled`) or ``cvxpy.Problem.solve``, and turns every outcome into
an :class:`Outcome` — it never raises for a solver failure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optim.checks import FloatArray
from optim.compiled import CANON_BACKEND, FastSolver
from optim.cvx import cp
from optim.formulation import Formulation, assign
from optim.options import SolverOptions
from optim.results import SolveStatus

# Clarabel's status words (fast path) and cvxpy's (portable path) -> ours.
_CLARABEL = {
    "Solved": SolveStatus.OPTIMAL,
    "AlmostSolved": SolveStatus.OPTIMAL_INACCURATE,
    "PrimalInfeasible": SolveStatus.INFEASIBLE,
    "AlmostPrimalInfeasible": SolveStatus.INFEASIBLE,
}
_CVXPY = {
    cp.OPTIMAL: SolveStatus.OPTIMAL,
    cp.OPTIMAL_INACCURATE: SolveStatus.OPTIMAL_INACCURATE,
    cp.INFEASIBLE: SolveStatus.INFEASIBLE,
    cp.INFEASIBLE_INACCURATE: SolveStatus.INFEASIBLE,
}
# Statuses that still carry a primal point worth checking against the model.
_USABLE_POINT = {"MaxIterations", "MaxTime", "InsufficientProgress", cp.USER_LIMIT}


@dataclass(frozen=True)
class Outcome:
    """One solver call: our status, the solver's word, and the outputs if usable."""

    status: SolveStatus
    solver_status: str
    values: dict[str, FloatArray] | None
    fast_path: bool


class Engine:
    """Solves a :class:`optim.formulation.Formulation` for given parameter values."""

    def __init__(self, form: Formulation, options: SolverOptions) -> None:
        self._form = form
        self._options = options
        self._outputs = form.outputs
        self._fast: FastSolver | None = None
        self._fast_tried = False

    @property
    def fast_path_active(self) -> bool:
        """True once the fast path has been compiled successfully."""
        return self._fast is not None

    def solve(self, values: dict[str, FloatArray]) -> Outcome:
        """Solve with these parameter values; never raises for solver trouble."""
        if self._options.fast_path and not self._fast_tried:
            # Compile lazily: cvxpy needs parameter values to canonicalize.
            self._fast_tried = True
            try:
                assign(self._form, values)
            except ValueError:
                pass  # the portable path below reports it as a typed status
            else:
                self._fast = FastSolver.compile(
                    self._form.problem,
                    self._form.params,
                    self._outputs,
                    self._options.clarabel_settings(),
                )
        if self._fast is not None:
            return self._solve_fast(values)
        return self._solve_cvxpy(values)

    def _solve_fast(self, values: dict[str, FloatArray]) -> Outcome:
        assert self._fast is not None
        try:
            sol = self._fast.solve(values)
        except Exception as exc:  # solver trouble must not reach the controller loop
            return Outcome(SolveStatus.SOLVER_ERROR, f"error: {exc}", None, True)
        status = _CLARABEL.get(sol.status)
        if status is None:
            usable = sol.status in _USABLE_POINT
            return Outcome(
                SolveStatus.OPTIMAL_INACCURATE if usable else SolveStatus.SOLVER_ERROR,
                sol.status,
                sol.values if usable else None,
                True,
            )
        point = sol.values if status.ok else None
        return Outcome(status, sol.status, point, True)

    def _solve_cvxpy(self, values: dict[str, FloatArray]) -> Outcome:
        try:
            assign(self._form, values)
            cp.Problem.solve(
                self._form.problem,
                solver=cp.CLARABEL,
                warm_start=True,
                canon_backend=CANON_BACKEND,
                presolve_enable=False,
                **self._options.clarabel_settings(),
            )
        except Exception as exc:  # solver trouble must not reach the controller loop
            return Outcome(SolveStatus.SOLVER_ERROR, f"error: {exc}", None, False)
        word = str(self._form.problem.status)
        status = _CVXPY.get(word)
        outputs = {
            name: np.asarray(var.value, dtype=np.float64)
            for name, var in self._outputs.items()
            if var.value is not None
        }
        usable = len(outputs) == len(self._outputs)
        if status is None:
            ok = usable and word in _USABLE_POINT
            return Outcome(
                SolveStatus.OPTIMAL_INACCURATE if ok else SolveStatus.SOLVER_ERROR,
                word,
                outputs if ok else None,
                False,
            )
        return Outcome(status, word, outputs if status.ok and usable else None, False)
