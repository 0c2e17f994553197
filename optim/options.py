"""Solver settings shared by the routing and allocation problems."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SolverOptions:
    """How to solve (defaults measured on the benchmark; see docs/optimizer.md).

    Attributes:
        fast_path: re-solve through :mod:`optim.compiled` (one mat-vec + Clarabel)
            instead of ``cvxpy.Problem.solve``; falls back to cvxpy automatically
            when the fast path is unavailable. Both give the same answer.
        tolerance: Clarabel's feasibility and gap tolerances (absolute and relative).
        max_iter: interior-point iteration cap.
        time_limit_s: wall-clock cap per solver call, seconds.
        release_rounds: extra solves allowed to release (class, pool) pairs whose
            SLO rows block a feasible plan (see docs/optimizer.md, "SLO rows").
        refine: also spend release rounds on a plan that is already feasible, to
            lower its objective (off by default: it can double the solve time).
    """

    fast_path: bool = True
    tolerance: float = 1e-7
    max_iter: int = 100
    time_limit_s: float = 1.0
    release_rounds: int = 2
    refine: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.tolerance < 1:
            raise ValueError(f"tolerance must be in (0, 1), got {self.tolerance}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be > 0, got {self.time_limit_s}")
        if self.release_rounds < 0:
            raise ValueError(f"release_rounds must be >= 0, got {self.release_rounds}")

    def clarabel_settings(self) -> dict[str, Any]:
        """Clarabel settings (names as in ``clarabel.DefaultSettings``)."""
        return {
            "tol_feas": self.tolerance,
            "tol_gap_abs": self.tolerance,
            "tol_gap_rel": self.tolerance,
            "max_iter": self.max_iter,
            "time_limit": self.time_limit_s,
        }
