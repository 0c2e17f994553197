"""Re-solve a DPP problem with one sparse mat-vec and a Clarabel call.

Why this exists: for the controller's small problems (2 pools × 8 classes), cvxpy's
``Problem.solve`` spends ~8 ms per re-solve in Python (validating every Parameter
value, rebuilding scipy sparse matrices, inverting the reduction chain) around
~1 ms of solver time — above the 5 ms budget. DPP guarantees that the conic data
is an affine function of the parameter vector; cvxpy computes that map once
(``ParamConeProg``, the object cvxpylayers also reuses). This module keeps the map,
and on each re-solve does only ``values = reduced_mat @ params``, writes the
values into a fixed-sparsity CSC matrix, and calls Clarabel, updating the solver's
data in place so that its symbolic factorization is reused. Clarabel is an
interior-point method, so that is its form of warm start (iterates are not reused).

It relies on two pieces of cvxpy internals (``ParamConeProg.reduced_A`` and
``ParamConeProg.q``); :meth:`FastSolver.compile` checks them and returns ``None``
when they are not as expected, and callers then use ``Problem.solve``. The unit
tests compare both paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from optim.checks import FloatArray
from optim.cvx import Parameter, Problem, Variable, cp

# cvxpy's 3-D COO canonicalization backend compiles this problem 2-3x faster than
# the default (C++) one at 16 and 64 pools x 32 classes; older cvxpy lacks it.
CANON_BACKEND: str | None = getattr(cp.settings, "COO_CANON_BACKEND", None)


@dataclass(frozen=True)
class FastSolution:
    """Clarabel's answer: ``status`` is Clarabel's status name (``"Solved"``, ...)."""

    status: str
    values: dict[str, FloatArray]
    iterations: int


class FastSolver:
    """A compiled problem: parameters in, variable values out.

    Build with :meth:`compile`; it is ``None`` where the fast path is unavailable.
    Not thread-safe (the Clarabel solver object is reused).
    """

    def __init__(
        self,
        params: dict[str, Parameter],
        param_cols: dict[str, tuple[int, int]],
        param_len: int,
        q_tensor: sp.csr_array,
        a_tensor: sp.csr_array,
        a_index: tuple[Any, Any, tuple[int, int]],
        cones: list[Any],
        var_cols: dict[str, tuple[int, tuple[int, ...]]],
        settings: dict[str, Any],
    ) -> None:
        self._params = params
        self._param_cols = param_cols
        self._param_vec = np.zeros(param_len + 1)
        self._param_vec[-1] = 1.0  # the constant column
        self._q_tensor = q_tensor
        self._a_tensor = a_tensor
        indices, indptr, shape = a_index
        # The last column of the stuffed matrix is the offset b; the rest is A.
        self._a_nnz = int(indptr[-2])
        self._a_indices = np.asarray(indices[: self._a_nnz])
        self._a_indptr = np.asarray(indptr[:-1])
        self._b_rows = np.asarray(indices[self._a_nnz :])
        self._shape = (int(shape[0]), int(shape[1]) - 1)
        self._cones = cones
        self._var_cols = var_cols
        self._settings = settings
        self._solver: Any = None

    @classmethod
    def compile(
        cls,
        problem: Problem,
        params: dict[str, Parameter],
        variables: dict[str, Variable],
        settings: dict[str, Any] | None = None,
    ) -> FastSolver | None:
        """Canonicalize ``problem`` once for Clarabel; ``None`` if the fast path is unusable.

        Every parameter must have a value (they define nothing structural, but
        cvxpy needs values to canonicalize). ``variables`` are the outputs to read.
        """
        try:
            from cvxpy.reductions.solvers.conic_solvers.clarabel_conif import (
                dims_to_solver_cones,
            )

            data, _chain, _inverse = problem.get_problem_data(
                cp.CLARABEL, enforce_dpp=True, canon_backend=CANON_BACKEND
            )
            prog = data[cp.settings.PARAM_PROB]
            prog.reduced_A.cache(keep_zeros=True)
            a_index = prog.reduced_A.problem_data_index
            if prog.P is not None or a_index is None or prog.lb_tensor is not None:
                return None
            by_id = {p.id: (name, p) for name, p in params.items()}
            param_cols: dict[str, tuple[int, int]] = {}
            for pid, col in prog.param_id_to_col.items():
                if pid in by_id:
                    param_cols[by_id[pid][0]] = (int(col), int(prog.param_id_to_size[pid]))
                elif pid != -1:  # -1 is cvxpy's constant column
                    return None
            var_cols = {}
            for name, var in variables.items():
                if var.id not in prog.var_id_to_col:
                    return None  # the chain renamed it (e.g. a variable attribute)
                var_cols[name] = (int(prog.var_id_to_col[var.id]), tuple(var.shape))
            return cls(
                params=params,
                param_cols=param_cols,
                param_len=int(prog.total_param_size),
                q_tensor=sp.csr_array(prog.q),
                a_tensor=sp.csr_array(prog.reduced_A.reduced_mat),
                a_index=a_index,
                cones=dims_to_solver_cones(data["dims"]),  # type: ignore[no-untyped-call]
                var_cols=var_cols,
                settings=dict(settings or {}),
            )
        except Exception:  # any surprise in cvxpy's internals just means "no fast path"
            return None

    def solve(self, values: dict[str, FloatArray]) -> FastSolution:
        """Solve with these parameter values (names as in ``params``; all required).

        Raises:
            KeyError: a parameter value is missing (a programming error).
            Exception: whatever Clarabel raises on malformed data; callers catch it.
        """
        import clarabel

        vec = self._param_vec
        for name, (col, size) in self._param_cols.items():
            vec[col : col + size] = np.asarray(values[name], dtype=np.float64).ravel(order="F")
        q_full = self._q_tensor @ vec
        q = np.ascontiguousarray(q_full[:-1])
        flat = self._a_tensor @ vec
        # cvxpy stuffs "A x + b in K"; Clarabel wants "A' x + s = b', s in K".
        a = sp.csc_array((-flat[: self._a_nnz], self._a_indices, self._a_indptr), shape=self._shape)
        b = np.zeros(self._shape[0])
        b[self._b_rows] = flat[self._a_nnz :]
        if self._solver is None or not self._solver.is_data_update_allowed():
            settings = clarabel.DefaultSettings()
            settings.verbose = False
            settings.presolve_enable = False  # keeps data updates (and sparsity) allowed
            for key, value in self._settings.items():
                setattr(settings, key, value)
            p = sp.csc_array(self._shape[1:] * 2)
            self._solver = clarabel.DefaultSolver(p, q, a, b, self._cones, settings)
        else:
            self._solver.update(q=q, A=a, b=b)
        result = self._solver.solve()
        x = np.asarray(result.x)
        out: dict[str, FloatArray] = {}
        for name, (col, shape) in self._var_cols.items():
            size = int(np.prod(shape)) if shape else 1
            out[name] = x[col : col + size].reshape(shape, order="F")
        return FastSolution(
            status=str(result.status), values=out, iterations=int(result.iterations)
        )
