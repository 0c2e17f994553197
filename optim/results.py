"""Typed outcomes of the two decisions (never exceptions for solver trouble)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from optim.checks import FloatArray
from optim.model import Prediction


class SolveStatus(StrEnum):
    """How a decision was reached (the optimizer's results and the controller's
    ``Plan.status`` share this one enum).

    ``OPTIMAL`` / ``OPTIMAL_INACCURATE``: the solver's plan, checked against the
    model (caps and SLOs hold for every pair that carries traffic).
    ``INFEASIBLE``: no plan meets the SLOs and caps (or a class has no pool that
    could meet its SLO even idle); the result holds a fallback plan.
    ``SOLVER_ERROR``: the solver failed or returned an unusable plan; fallback too.
    ``STATIC``: no solve ran (optimizer disabled, not enough telemetry yet, or
    an estimate error): routing proportional to live replicas.
    """

    OPTIMAL = "optimal"
    OPTIMAL_INACCURATE = "optimal_inaccurate"
    INFEASIBLE = "infeasible"
    SOLVER_ERROR = "solver_error"
    STATIC = "static"

    @property
    def ok(self) -> bool:
        """True when the plan came from a successful solve."""
        return self in (SolveStatus.OPTIMAL, SolveStatus.OPTIMAL_INACCURATE)


class Fallback(StrEnum):
    """Which plan a failed solve returned instead."""

    NONE = "none"
    LAST_FEASIBLE = "last_feasible"
    PROPORTIONAL = "proportional_to_capacity"


@dataclass(frozen=True)
class RoutingResult:
    """The fast decision: routing fractions per (class, pool).

    Attributes:
        status: see :class:`SolveStatus`.
        x: routing fractions (C, P), rows sum to 1, zero on unusable pairs
            (read-only). The plan to apply, whatever the status.
        objective: the model objective of ``x`` (s², ``inf`` if ``x`` saturates a pool).
        prediction: what ``x`` implies per pool and pair (:class:`optim.model.Prediction`).
        solve_ms: wall time of :meth:`RoutingProblem.solve`, milliseconds.
        fallback: :attr:`Fallback.NONE` unless the solve failed.
        solver_status: the solver's own status word of the last round.
        rounds: solver calls made (strict, phase-1 and pair-release solves).
        message: a human-readable reason when ``status`` is not optimal.
    """

    status: SolveStatus
    x: FloatArray
    objective: float
    prediction: Prediction
    solve_ms: float
    fallback: Fallback
    solver_status: str
    rounds: int
    message: str = ""

    @property
    def fallback_used(self) -> bool:
        return self.fallback is not Fallback.NONE


@dataclass(frozen=True)
class AllocationResult:
    """The slow decision: replicas per pool.

    Attributes:
        status: status of the optimizer's search (see :class:`SolveStatus`).
        replicas: replicas to run per pool (P,) after hysteresis and cooldown
            (read-only); on failure, the current replicas clipped to the bounds.
        proposed: the optimizer's integer allocation before hysteresis (P,).
        objective: variance objective + cost of ``proposed`` (objective units).
        cost_per_hour: $/hour of ``replicas``.
        lower_bound: objective of the continuous relaxation (``nan`` if it failed);
            ``objective - lower_bound`` bounds the optimality gap of ``proposed``.
        routing: the routing decision for ``replicas``.
        held: per pool, why it did not move to ``proposed`` ("" if it moved or
            there was nothing to do; "confidence_interval", "cooldown", "budget").
        allocation_ms: wall time of the decision, milliseconds.
        evaluations: integer allocations evaluated with the routing problem.
        message: a human-readable reason when ``status`` is not optimal.
    """

    status: SolveStatus
    replicas: FloatArray
    proposed: FloatArray
    objective: float
    cost_per_hour: float
    lower_bound: float
    routing: RoutingResult
    held: tuple[str, ...]
    allocation_ms: float
    evaluations: int
    message: str = ""

    @property
    def gap_bound(self) -> float:
        """Relative optimality gap bound ``(objective - lower_bound) / |objective|``."""
        if not (self.objective == self.objective and self.lower_bound == self.lower_bound):
            return float("nan")
        return max(self.objective - self.lower_bound, 0.0) / max(abs(self.objective), 1e-12)
