"""The cvxpy model, built once with Parameters (DPP) for both decisions.

One builder serves the fast routing decision (replicas pinned by an equality to a
Parameter) and the continuous relaxation of the allocation (replicas free between
bounds, GPU budgets, a cost term). Everything is written in perspective form —
per-pool quantities are ``n_p·φ(load_p / n_p)`` expressed in the busy
replica-equivalents ``L_p = n_p ρ_p`` and ``O_p = n_p o_p`` — so the model is jointly
convex in routing and replicas, and a pool with zero replicas is a valid point.

Cones (all vectorized, one ``cp.SOC`` per family):

* ``z̃_p >= n_p² / (n_p - L_p)`` so ``z̃_p = n_p / (1 - ρ_p)`` at the optimum
  (rotated cone ``||(2n, z̃ - n + L)|| <= z̃ + n - L``); the same for ``ỹ_p`` with ``O_p``.
* ``w_p >= L_p² / n_p`` (``= n_p ρ_p²``) for the interconnect term.
* SLO per (c, p), multiplied through by ``n_p >= 0`` and divided by ``slo_c``::

      ((t - slo - q - k) n + q z̃ + k ỹ + κ ||(s0 n, q (z̃ - n), k (ỹ - n), √η L)||) / slo <= s

  which is ``mean + κ σ <= slo`` of :mod:`optim.model` when ``z̃, ỹ`` are tight and
  ``s = 0``. The strict variant has no slack; the phase-1 variant (``slack=True``)
  has ``s_cp >= 0`` priced at :data:`SLACK_PRICE` (an exact l1 penalty), so it stays
  solvable when the SLOs are not, and its plan shows which pairs conflict
  (:mod:`optim.routing` uses that to release pairs; the allocation's relaxation
  uses it to get a starting point even when the SLOs are out of reach).

DPP forbids parameter × parameter, so every product of inputs (``λ_c d_cp``,
``κ_c s0_cp``, ...) is a separate Parameter computed in numpy by :func:`parameter_values`;
``L`` and ``O`` are variables tied by equalities so that parameters multiply only
parameter-free expressions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optim.checks import BoolArray, FloatArray
from optim.cvx import Constraint, Expression, Parameter, Problem, Variable, cp
from optim.inputs import ProblemInputs
from optim.model import kappas, kv_blocks
from optim.specs import ClassSpec, PoolSpec

# A pair that may not be used gets this much room (in SLOs per replica) on top of the
# largest value its SLO row can take at the caps, which switches the row off without
# changing the compiled problem's structure.
_SLACK = 1.0
# Objective price of one unit of SLO slack (SLOs × replicas). The objective is scaled
# to coefficients <= 1, so this exceeds any SLO row's multiplier in practice and the
# l1 penalty is exact: slack is zero whenever the hard-constrained problem is feasible.
SLACK_PRICE = 1e4


@dataclass(frozen=True)
class Formulation:
    """A compiled problem and its handles.

    ``params`` maps a parameter name to its ``cp.Parameter``; :func:`parameter_values`
    returns values under the same names (a superset). ``free_replicas`` and
    ``slack`` (None for the strict variant) tell which variant it is.
    """

    problem: Problem
    params: dict[str, Parameter]
    x: Variable
    n: Variable
    slack: Variable | None
    free_replicas: bool

    @property
    def outputs(self) -> dict[str, Variable]:
        """Variables a solve reads back, by name."""
        out = {"x": self.x, "n": self.n}
        if self.slack is not None:
            out["slack"] = self.slack
        return out


def gpu_types(pools: tuple[PoolSpec, ...]) -> tuple[str, ...]:
    """Distinct GPU types in pool order of first appearance."""
    return tuple(dict.fromkeys(p.gpu_type for p in pools))


def build(
    pools: tuple[PoolSpec, ...],
    classes: tuple[ClassSpec, ...],
    *,
    free_replicas: bool,
    slack: bool = False,
) -> Formulation:
    """Build the DPP problem for these specs (no solve, no side effects).

    ``slack=True`` adds a priced slack per SLO row (the phase-1 variant, always
    solvable when the caps are); the strict variant has none and is ~25 % faster
    at 16 pools × 32 classes, so it is what every solve tries first.

    Raises:
        RuntimeError: if the construction is not DPP (a bug, caught by the tests).
    """
    c_n, p_n = len(classes), len(pools)
    cp_shape = (c_n, p_n)

    # Only the objective's weights need a sign (for DCP curvature); cvxpy checks the
    # sign on every assignment, which the portable path would pay for nothing.
    def param(name: str, shape: tuple[int, ...], nonneg: bool = False) -> Parameter:
        return Parameter(shape, name=name, nonneg=nonneg)

    params = {
        "A": param("A", cp_shape),  # λ_c d_cp: busy replica-equivalents per routed unit
        "K": param("K", cp_shape),  # λ_c b_cp / B_p: KV-full replica-equivalents
        "lin": param("lin", cp_shape),  # objective coefficients of x
        "off": param("off", cp_shape),  # 1 where the pair may not carry traffic
        "cz": param("cz", (p_n,), nonneg=True),  # w_gpu g_p
        "cy": param("cy", (p_n,), nonneg=True),  # w_mem m_p
        "cw": param("cw", (p_n,), nonneg=True),  # w_net η_p
        "cn": param("cn", (p_n,)),  # objective coefficients of n
        # SLO rows, each divided by its class SLO so that slack is in "SLOs × replicas".
        "D": param("D", cp_shape),  # (t - slo - q - k) / slo
        "Qm": param("Qm", cp_shape),  # q / slo
        "Km": param("Km", cp_shape),  # k / slo
        "S": param("S", cp_shape),  # κ s0 / slo
        "G": param("G", cp_shape),  # κ / slo
        "q": param("q", (p_n,)),  # queueing-delay scale, s
        "k": param("k", (p_n,)),  # preemption-delay scale, s
        "e": param("e", (p_n,)),  # √η, s
        "rho_max": param("rho_max", ()),
        "kv_max": param("kv_max", ()),
    }
    # No variable attributes (nonneg=...): cvxpy would rename such variables in its
    # reduction chain and the fast path (optim.compiled) reads them by id.
    x = cp.Variable(cp_shape, name="x")
    n = cp.Variable(p_n, name="n")
    load = cp.Variable(p_n, name="L")
    kv = cp.Variable(p_n, name="O")
    zt = cp.Variable(p_n, name="zt")
    yt = cp.Variable(p_n, name="yt")
    wn = cp.Variable(p_n, name="wn")
    slack_var = cp.Variable(cp_shape, name="slack") if slack else None
    sigma = cp.Variable(p_n, name="sigma")  # load-dependent part of a pool's latency σ

    ones_c = np.ones((c_n, 1))

    def rows(v: Expression) -> Expression:
        """(P,) -> (C, P), each class row a copy: lets (c, p) parameters multiply it."""
        expanded: Expression = ones_c @ cp.reshape(v, (1, p_n), order="C")
        return expanded

    prm = params
    constraints: list[Constraint] = [
        x >= 0,
        n >= 0,
        cp.sum(x, axis=1) == 1,
        cp.sum(cp.multiply(prm["off"], x)) == 0,
        load == cp.sum(cp.multiply(prm["A"], x), axis=0),
        kv == cp.sum(cp.multiply(prm["K"], x), axis=0),
        load <= prm["rho_max"] * n,
        kv <= prm["kv_max"] * n,
        cp.SOC(zt + n - load, cp.vstack([2 * n, zt - n + load]), axis=0),
        cp.SOC(yt + n - kv, cp.vstack([2 * n, yt - n + kv]), axis=0),
        cp.SOC(wn + n, cp.vstack([2 * load, wn - n]), axis=0),
    ]
    # σ of class c on pool p is ||(s0_cp n, σ_p)|| with σ_p the class-independent
    # part; nesting the norms keeps the per-pair cones 3-dimensional (cheap for
    # Clarabel) instead of repeating the pool's terms in every class's cone.
    constraints.append(
        cp.SOC(
            sigma,
            cp.vstack(
                [
                    cp.multiply(prm["q"], zt - n),
                    cp.multiply(prm["k"], yt - n),
                    cp.multiply(prm["e"], load),
                ]
            ),
            axis=0,
        )
    )
    n_rows, z_rows, y_rows = rows(n), rows(zt), rows(yt)
    slo_lhs = (
        cp.multiply(prm["D"], n_rows)
        + cp.multiply(prm["Qm"], z_rows)
        + cp.multiply(prm["Km"], y_rows)
    )
    spread = cp.vstack(
        [
            cp.vec(cp.multiply(prm["S"], n_rows), order="C"),
            cp.vec(cp.multiply(prm["G"], rows(sigma)), order="C"),
        ]
    )
    objective = (
        prm["cz"] @ (zt - load)
        + prm["cy"] @ (yt - kv)
        + prm["cw"] @ wn
        + prm["cn"] @ n
        + cp.sum(cp.multiply(prm["lin"], x))
    )
    if slack_var is not None:
        params["pen"] = param("pen", (), nonneg=True)  # price of one unit of SLO slack
        constraints.append(slack_var >= 0)
        slo_lhs = slo_lhs - slack_var
        objective = objective + params["pen"] * cp.sum(slack_var)
    constraints.append(cp.SOC(-cp.vec(slo_lhs, order="C"), spread, axis=0))
    if free_replicas:
        types = gpu_types(pools)
        gpus = np.array([[p.tp_size if p.gpu_type == t else 0 for p in pools] for t in types])
        params["n_lo"] = param("n_lo", (p_n,), nonneg=True)
        params["n_hi"] = param("n_hi", (p_n,), nonneg=True)
        params["budget"] = param("budget", (len(types),), nonneg=True)
        constraints += [n >= params["n_lo"], n <= params["n_hi"], gpus @ n <= params["budget"]]
    else:
        params["n_fix"] = param("n_fix", (p_n,), nonneg=True)
        constraints.append(n == params["n_fix"])
    problem = cp.Problem(cp.Minimize(objective), constraints)
    if not problem.is_dcp(dpp=True):
        raise RuntimeError("optimizer formulation is not DPP; re-solves would recompile")
    return Formulation(
        problem=problem, params=params, x=x, n=n, slack=slack_var, free_replicas=free_replicas
    )


def parameter_values(
    pools: tuple[PoolSpec, ...],
    classes: tuple[ClassSpec, ...],
    inputs: ProblemInputs,
    mask: BoolArray,
    *,
    cost_per_replica: FloatArray | None = None,
) -> dict[str, FloatArray]:
    """Numpy values for every shared parameter (not ``n_fix``/``n_lo``/``n_hi``/``budget``).

    ``mask`` marks usable pairs (see :func:`optim.model.eligible_pairs`).
    ``cost_per_replica`` (P,) is the allocation's cost term in objective units per
    replica; None for the routing problem. The objective coefficients are divided
    by one scale so that the solver sees numbers near 1: the optimum is unchanged.
    """
    lam = inputs.arrival_rate_per_s[:, None]
    kappa = kappas(classes)[:, None]
    slo = np.array([c.slo_s for c in classes])[:, None]
    q, k, eta = inputs.queue_delay_s, inputs.preempt_delay_s, inputs.net_var_s2
    a = lam * inputs.demand_s
    kk = lam * inputs.kv_block_s / kv_blocks(pools)[None, :]
    cz = inputs.w_gpu * inputs.gpu_var_s2
    cy = inputs.w_mem * inputs.kv_var_s2
    cw = inputs.w_net * eta
    lin = inputs.w_gpu * a * inputs.hetero
    cn = -(cz + cy) + (0.0 if cost_per_replica is None else cost_per_replica)
    scale = max(float(np.max(np.abs(np.concatenate([cz, cy, cw, cn, lin.ravel()])))), 1e-12)
    ones = np.ones_like(inputs.service_time_s)
    d = (inputs.service_time_s - slo - q[None, :] - k[None, :]) / slo
    qm, km = q[None, :] / slo * ones, k[None, :] / slo * ones
    s = kappa * inputs.service_std_s / slo
    g = kappa / slo * ones
    # Switch off unusable pairs: with z̃ <= n/(1-rho_max) and ỹ <= n/(1-kv_max) at a
    # tight optimum, a D this negative makes the row slack whatever the routing.
    z_cap, y_cap = 1.0 / (1.0 - inputs.rho_max), 1.0 / (1.0 - inputs.kv_max)
    off = -(qm * z_cap + km * y_cap) - _SLACK
    d = np.where(mask, d, off)
    s, g = np.where(mask, s, 0.0), np.where(mask, g, 0.0)
    return {
        "A": a,
        "K": kk,
        "lin": lin / scale,
        "off": (~mask).astype(np.float64),
        "cz": cz / scale,
        "cy": cy / scale,
        "cw": cw / scale,
        "cn": cn / scale,
        "pen": np.array(SLACK_PRICE),
        "D": d,
        "Qm": qm,
        "Km": km,
        "S": s,
        "G": g,
        "q": q,
        "k": k,
        "e": np.sqrt(eta),
        "rho_max": np.array(inputs.rho_max),
        "kv_max": np.array(inputs.kv_max),
        # Not a parameter: the factor that maps the solver's objective back to s².
        "objective_scale": np.array(scale),
    }


def assign(form: Formulation, values: dict[str, FloatArray]) -> None:
    """Write parameter values (the only thing a re-solve changes); extra names are ignored."""
    for name, param in form.params.items():
        param.value = values[name]
