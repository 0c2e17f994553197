"""The performance model in plain numpy: what a plan implies for each pool and class.

This is the reference the cvxpy formulation (:mod:`optim.formulation`) encodes;
results, fallbacks and brute-force checks are evaluated with it, so a plan's
reported numbers never depend on which path produced it. Definitions are in
docs/optimizer.md; in short, for pool p with n_p replicas and routing x:

* utilization ``ρ_p = Σ_c λ_c x_cp d_cp / n_p``,
  KV occupancy ``o_p = Σ_c λ_c x_cp b_cp / (n_p B_p)``
* per-replica variances (s²): GPU ``g ρ²/(1-ρ) + Σ_c λ_c x_cp d_cp v_cp / n_p``,
  KV ``m o²/(1-o)``, interconnect ``η ρ²``
* objective ``Σ_p n_p (w_gpu σ²_gpu + w_mem σ²_kv + w_net σ²_net)``
* latency of class c on pool p: mean ``t + q ρ/(1-ρ) + k o/(1-o)``,
  std ``sqrt(s0² + (q ρ/(1-ρ))² + (k o/(1-o))² + η ρ²)``, tail ``mean + κ_c std``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from optim.checks import BoolArray, FloatArray
from optim.inputs import ProblemInputs
from optim.specs import ClassSpec, PoolSpec

_A = TypeVar("_A", bound=np.ndarray[Any, Any])

# Relative slack on SLOs and caps when checking a plan (0.1 ms on a 1 s SLO): covers
# the solver's 1e-7 tolerance and the zeroing of sub-1e-4 routing weights.
FEASIBILITY_TOL = 1e-4


@dataclass(frozen=True)
class Prediction:
    """What a routing plan implies under the model (arrays are read-only).

    Attributes:
        utilization: ρ_p per pool (P,); ``inf`` where load is sent to a pool with no replicas.
        kv_occupancy: o_p per pool (P,).
        var_gpu_s2, var_kv_s2, var_net_s2: per-replica variances (P,), s²; ``inf``
            at or beyond saturation (ρ >= 1 or o >= 1).
        objective: ``Σ_p n_p (w_gpu σ²_gpu + w_mem σ²_kv + w_net σ²_net)``, s²
            (``inf`` when a pool is saturated).
        latency_mean_s, latency_std_s, latency_tail_s: per (class, pool) (C, P).
        slo_ok: per (class, pool) (C, P): the tail is within the class SLO, or the
            pair carries no traffic.
        within_caps: every pool respects ``rho_max`` and ``kv_max`` (1e-6 slack).
    """

    utilization: FloatArray
    kv_occupancy: FloatArray
    var_gpu_s2: FloatArray
    var_kv_s2: FloatArray
    var_net_s2: FloatArray
    objective: float
    latency_mean_s: FloatArray
    latency_std_s: FloatArray
    latency_tail_s: FloatArray
    slo_ok: BoolArray
    within_caps: bool

    @property
    def feasible(self) -> bool:
        """Caps respected and every used (class, pool) pair meets its SLO."""
        return self.within_caps and bool(np.all(self.slo_ok))


def kappas(classes: tuple[ClassSpec, ...]) -> FloatArray:
    """κ per class (C,)."""
    return np.array([c.kappa for c in classes], dtype=np.float64)


def kv_blocks(pools: tuple[PoolSpec, ...]) -> FloatArray:
    """Usable KV blocks per replica (P,)."""
    return np.array([p.kv_blocks for p in pools], dtype=np.float64)


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    # Load on a pool with no replicas is an infinite utilization; no load is zero.
    out = np.where(num > 0, np.inf, 0.0)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _amplification(u: FloatArray) -> FloatArray:
    """``u/(1-u)``: the M/M/1-like blow-up, infinite at and beyond saturation."""
    out = np.full_like(u, np.inf)
    np.divide(u, 1.0 - u, out=out, where=u < 1.0)
    return out


def _readonly(a: _A) -> _A:
    a.flags.writeable = False
    return a


def predict(
    pools: tuple[PoolSpec, ...],
    classes: tuple[ClassSpec, ...],
    inputs: ProblemInputs,
    x: FloatArray,
    replicas: FloatArray | None = None,
    *,
    slo_tol: float = FEASIBILITY_TOL,
) -> Prediction:
    """Evaluate routing ``x`` (C, P) with ``replicas`` (default ``inputs.replicas``).

    ``slo_tol`` is a relative slack on SLOs and caps so that solver tolerance and
    the clean-up of tiny routing weights do not flip a plan to infeasible. Never
    raises for saturated pools: their variances and latencies are ``inf``.
    """
    n = inputs.replicas if replicas is None else np.asarray(replicas, dtype=np.float64)
    lam = inputs.arrival_rate_per_s[:, None]
    load = (lam * x * inputs.demand_s).sum(axis=0)
    kv_load = (lam * x * inputs.kv_block_s).sum(axis=0) / kv_blocks(pools)
    hetero = (lam * x * inputs.demand_s * inputs.hetero).sum(axis=0)
    rho = _ratio(load, n)
    occ = _ratio(kv_load, n)
    amp_rho, amp_occ = _amplification(rho), _amplification(occ)
    with np.errstate(invalid="ignore"):
        var_gpu = inputs.gpu_var_s2 * rho * amp_rho + _ratio(hetero, n)
        var_kv = inputs.kv_var_s2 * occ * amp_occ
        var_net = inputs.net_var_s2 * rho**2
        # 0·inf is nan: a zero coefficient means no variance of that kind at any load.
        var_gpu = np.where(inputs.gpu_var_s2 == 0, _ratio(hetero, n), var_gpu)
        var_kv = np.where(inputs.kv_var_s2 == 0, 0.0, var_kv)
        var_net = np.where(inputs.net_var_s2 == 0, 0.0, var_net)
        per_pool = n * (inputs.w_gpu * var_gpu + inputs.w_mem * var_kv + inputs.w_net * var_net)
        per_pool = np.where(n == 0, 0.0, per_pool)  # an empty pool carries no variance
        queue = np.where(inputs.queue_delay_s == 0, 0.0, inputs.queue_delay_s * amp_rho)
        preempt = np.where(inputs.preempt_delay_s == 0, 0.0, inputs.preempt_delay_s * amp_occ)
        mean = inputs.service_time_s + queue[None, :] + preempt[None, :]
        std = np.sqrt(
            inputs.service_std_s**2 + queue[None, :] ** 2 + preempt[None, :] ** 2 + var_net[None, :]
        )
        tail = mean + kappas(classes)[:, None] * std
    slo = np.array([c.slo_s for c in classes])[:, None]
    used = x > 1e-6
    slo_ok = (~used) | (tail <= slo * (1 + slo_tol))
    within = bool(
        np.all(rho <= inputs.rho_max * (1 + slo_tol) + slo_tol)
        and np.all(occ <= inputs.kv_max * (1 + slo_tol) + slo_tol)
    )
    return Prediction(
        utilization=_readonly(rho),
        kv_occupancy=_readonly(occ),
        var_gpu_s2=_readonly(var_gpu),
        var_kv_s2=_readonly(var_kv),
        var_net_s2=_readonly(var_net),
        objective=float(per_pool.sum()),
        latency_mean_s=_readonly(mean),
        latency_std_s=_readonly(std),
        latency_tail_s=_readonly(tail),
        slo_ok=_readonly(slo_ok),
        within_caps=within,
    )


def zero_load_tail_s(classes: tuple[ClassSpec, ...], inputs: ProblemInputs) -> FloatArray:
    """Tail latency of each (class, pool) at zero load (C, P): the best a pool can do."""
    return inputs.service_time_s + kappas(classes)[:, None] * inputs.service_std_s


def eligible_pairs(
    classes: tuple[ClassSpec, ...], inputs: ProblemInputs, pool_open: BoolArray
) -> BoolArray:
    """Pairs the router may use (C, P): allowed, on an open pool (``pool_open``: it has,
    or may get, replicas), and whose SLO is reachable at zero load. A pair that
    misses its SLO even when idle would only make the problem infeasible."""
    slo = np.array([c.slo_s for c in classes])[:, None]
    ok = inputs.allowed_mask & pool_open[None, :]
    return ok & (zero_load_tail_s(classes, inputs) <= slo)
