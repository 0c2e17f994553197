"""The synthetic backpressure plant of the policy tests (documented in
docs/backpressure.md, "The step-load test"). ``snap`` and ``request`` are the
shared builders (``tests.builders``), re-exported for the policy tests."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from policies.backpressure import Backpressure
from tests.builders import request
from tests.builders import snapshot as snap

__all__ = ["StepLoadPlant", "request", "snap", "step_metrics"]


# ---- the synthetic backpressure plant ---------------------------------------------
@dataclass
class StepLoadPlant:
    """A pool in virtual time (docs/backpressure.md, "The step-load test").

    True decode ITL σ as a function of the admitted prefill rate a (tokens/s):
        σ(a) = sigma0 · (1 + a / a0) ** elasticity
    The controller sees it through the replicas' decayed estimator: per period T
    a noisy sample σ(a)·LogNormal(0, noise) folded into an EWMA with time
    constant tau_s. Admitted rate = min(offered load, budget).
    """

    sigma0_s: float = 0.004
    a0: float = 4000.0
    elasticity: float = 1.5
    tau_s: float = 1.0
    period_s: float = 0.25
    noise: float = 0.05
    seed: int = 0
    trace: dict[str, list[float]] = field(default_factory=dict)

    def sigma(self, admitted: float) -> float:
        return self.sigma0_s * (1.0 + admitted / self.a0) ** self.elasticity

    def rate_at(self, sigma_s: float) -> float:
        """Admitted rate at which the true σ equals ``sigma_s`` (inverse of sigma)."""
        return self.a0 * ((sigma_s / self.sigma0_s) ** (1.0 / self.elasticity) - 1.0)

    def run(
        self,
        controller: Backpressure,
        offered: Callable[[float], float],
        duration_s: float,
        pool: str = "p",
    ) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        alpha = 1.0 - math.exp(-self.period_s / self.tau_s)
        sigma_m = self.sigma(offered(0.0))
        budget = float("inf")
        out: dict[str, list[float]] = {
            k: [] for k in ("t", "offered", "admitted", "budget", "sigma", "sigma_m")
        }
        n = round(duration_s / self.period_s)
        for k in range(n + 1):
            t = k * self.period_s
            lam = offered(t)
            admitted = min(lam, budget)
            true = self.sigma(admitted)
            sample = true * math.exp(self.noise * rng.standard_normal() - 0.5 * self.noise**2)
            sigma_m += alpha * (sample - sigma_m)
            st = controller.update(pool, t, sigma_m, admitted_prefill_tokens_per_s=admitted)
            budget = float(st.prefill_token_budget)
            for key, val in zip(out, (t, lam, admitted, budget, true, sigma_m), strict=True):
                out[key].append(val)
        return {k: np.asarray(v) for k, v in out.items()}


def step_metrics(
    run: dict[str, np.ndarray], t_step: float, final: float, band: float = 0.05
) -> dict[str, float]:
    """Settling time (last exit from ±band around ``final``, after the step),
    undershoot below ``final`` after the first entry into the band, and the
    number of times the admitted rate crosses ``final`` after that entry."""
    t, a = run["t"], run["admitted"]
    after = t >= t_step
    ta, aa = t[after], a[after]
    inside = np.abs(aa - final) <= band * final
    outside_idx = np.flatnonzero(~inside)
    settle = (
        0.0 if outside_idx.size == 0 else float(ta[min(outside_idx[-1] + 1, ta.size - 1)] - t_step)
    )
    if outside_idx.size and outside_idx[-1] == ta.size - 1:
        settle = math.inf
    first_in = int(np.argmax(inside)) if inside.any() else ta.size
    tail = aa[first_in:]
    undershoot = float(max(0.0, (final - tail.min()) / final)) if tail.size else math.inf
    overshoot = float(max(0.0, (tail.max() - final) / final)) if tail.size else math.inf
    sign = np.sign(tail - final)
    sign = sign[sign != 0]
    crossings = int(np.count_nonzero(np.diff(sign))) if sign.size else 0
    return {
        "settling_s": settle,
        "undershoot": undershoot,
        "overshoot_after_entry": overshoot,
        "crossings": float(crossings),
    }
