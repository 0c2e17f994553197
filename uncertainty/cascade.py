"""The cascade model: how prefill variance propagates into decode through the KV cache.

    σ_decode = f(σ_prefill, kv_pressure, batch_heterogeneity)

The design's law is multiplicative, ``σ_decode = σ_prefill · (1 + kv) · h``: a
prefill chunk in a mixed batch stretches the decode steps of every running
sequence, more so when the KV cache is full (longer attention reads, preemption
risk) and when sequences in the batch differ in length (padding/stragglers). We
fit its log-linear generalisation online:

    log σ_d = θ0 + θ1·log σ_p + θ2·log(1 + kv) + θ3·log h  (+ noise)

with θ = (0, 1, 1, 1) as the prior (the multiplicative law is the special case).
Fitting is recursive least squares with exponential forgetting λ, written in
information form (A = Σ λ^age x xᵀ, b = Σ λ^age x y), which makes a batch update
exactly equal to the per-sample RLS recursion and lets us update with one matrix
product per batch. A persistent ridge of strength ``prior_strength`` pulls θ
towards the prior when data are scarce (it never decays).

**Identifiability** (docs/uncertainty.md, "Validating the cascade fit"). In
serving telemetry the three regressors are not independent: KV usage rises with
the batch (load), and so does decode σ through queueing the model does not
name; on an over-provisioned cache (vLLM on CPU) KV usage spans a few percent.
Least squares then puts the load effect on whichever regressor has the least
spread, with exponents like 11 (KV) or < 0 (prefill) that no physics gives. The
guard is on the exponents (a, b, c), not the scale:

* bounds ``EXPONENT_BOUNDS`` = [0, 3]: a longer prefill chunk, a fuller cache or
  a more mixed batch can only lengthen decode steps (a negative elasticity is a
  confound), and above 3 a full cache would multiply σ by more than 8 — the
  preemption cliff, which the optimizer models with its own o²/(1-o) term.
  The bounded solve is a 4-variable box QP (``scipy.optimize.lsq_linear``),
  run only when the unconstrained optimum leaves the box.
* optionally (off by default) a ridge that is a Gaussian prior on each exponent,
  std ``exponent_prior_std`` around the multiplicative law, weighted s²/τ² with
  s² the fit's log-residual variance. Measured on simulator telemetry (azure-conv,
  loads 0.5/0.8/0.95, 120 s, first 70 % fitted): held-out R² 0.65/0.67/0.53
  unbounded, 0.60/0.65/0.47 bounded, 0.54/0.61/0.44 bounded with τ = 0.5; the
  bounds alone already keep the collinear case physical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import lsq_linear

from uncertainty.validation import FloatArray

MULTIPLICATIVE_PRIOR: tuple[float, float, float, float] = (0.0, 1.0, 1.0, 1.0)
EXPONENT_BOUNDS: tuple[float, float] = (0.0, 3.0)
_NOISE_GUESS = 0.5  # log-residual std assumed before the fit has 5 samples
_NOISE_FLOOR = 0.01


@dataclass(frozen=True)
class CascadeCoefficients:
    """Fitted θ of ``log σ_d = log_scale + a·log σ_p + b·log(1+kv) + c·log h``."""

    log_scale: float
    a_prefill: float
    b_kv: float
    c_heterogeneity: float
    n_eff: float  # decayed number of samples behind the fit
    residual_std: float  # std of log-residuals (multiplicative noise level)

    @property
    def scale(self) -> float:
        return math.exp(self.log_scale)


def _features(
    sigma_prefill: ArrayLike, kv_pressure: ArrayLike, heterogeneity: ArrayLike
) -> FloatArray:
    sp = np.asarray(sigma_prefill, dtype=np.float64).reshape(-1)
    kv = np.asarray(kv_pressure, dtype=np.float64).reshape(-1)
    h = np.asarray(heterogeneity, dtype=np.float64).reshape(-1)
    n = max(sp.size, kv.size, h.size)
    sp, kv, h = (np.broadcast_to(a, (n,)) for a in (sp, kv, h))
    for name, arr, ok in (
        ("sigma_prefill", sp, np.isfinite(sp) & (sp > 0)),
        ("kv_pressure", kv, np.isfinite(kv) & (kv >= 0) & (kv <= 1)),
        ("heterogeneity", h, np.isfinite(h) & (h >= 1)),
    ):
        if not ok.all():
            i = int(np.argmin(ok))
            rule = {"sigma_prefill": "> 0", "kv_pressure": "in [0, 1]", "heterogeneity": ">= 1"}[
                name
            ]
            raise ValueError(f"{name}[{i}] = {arr[i]!r}: must be finite and {rule}")
    x = np.empty((n, 4))
    x[:, 0] = 1.0
    x[:, 1] = np.log(sp)
    x[:, 2] = np.log1p(kv)
    x[:, 3] = np.log(h)
    return x


class CascadeModel:
    """Online fit of the prefill → decode variance cascade (see module docstring).

    Args:
        forgetting: RLS forgetting factor λ per sample (0 < λ ≤ 1); the
            information half-life is ln 2 / (1 − λ) samples.
        prior_strength: ridge weight towards ``prior`` (a small fraction of one
            sample's information: enough to pin θ with no data, negligible after a few).
        prior: θ of the prior; the multiplicative law by default.
        exponent_prior_std: τ of the Gaussian prior on the exponents (a, b, c);
            ``inf`` (the default) turns that ridge off (module docstring,
            "Identifiability": on simulator telemetry it cost 0.04-0.06 of
            held-out R² beyond the bounds, which alone keep the fit physical).
        bounds: (low, high) of the exponents; ``None`` fits them unbounded.

    ``update`` raises ``ValueError`` (nothing changed) on NaN/inf, σ ≤ 0,
    kv outside [0, 1], heterogeneity < 1 or mismatched lengths.
    """

    def __init__(
        self,
        forgetting: float = 0.999,
        prior_strength: float = 0.01,
        prior: tuple[float, float, float, float] = MULTIPLICATIVE_PRIOR,
        exponent_prior_std: float = math.inf,
        bounds: tuple[float, float] | None = EXPONENT_BOUNDS,
    ) -> None:
        if not exponent_prior_std > 0:
            raise ValueError(f"exponent_prior_std must be > 0, got {exponent_prior_std!r}")
        if bounds is not None and not (
            math.isfinite(bounds[0]) and math.isfinite(bounds[1]) and bounds[0] < bounds[1]
        ):
            raise ValueError(f"bounds must be finite with low < high, got {bounds!r}")
        if not 0.0 < forgetting <= 1.0:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting!r}")
        if not prior_strength > 0:
            raise ValueError(f"prior_strength must be > 0, got {prior_strength!r}")
        self.forgetting = forgetting
        self.prior_strength = prior_strength
        self.prior = np.asarray(prior, dtype=np.float64)
        self.exponent_prior_std = float(exponent_prior_std)
        self.bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))
        if self.bounds is not None and not (
            (self.prior[1:] >= self.bounds[0]).all() and (self.prior[1:] <= self.bounds[1]).all()
        ):
            raise ValueError(f"prior exponents {self.prior[1:].tolist()} outside bounds {bounds}")
        self._a = np.zeros((4, 4))
        self._b = np.zeros(4)
        self._syy = 0.0  # Σ λ^age y², for the residual variance
        self._w = 0.0  # Σ λ^age
        self._theta = self.prior.copy()

    def update(
        self,
        sigma_prefill: ArrayLike,
        kv_pressure: ArrayLike,
        heterogeneity: ArrayLike,
        sigma_decode: ArrayLike,
    ) -> CascadeModel:
        """Fold observations (arrays, oldest first; scalars broadcast)."""
        x = _features(sigma_prefill, kv_pressure, heterogeneity)
        y = np.asarray(sigma_decode, dtype=np.float64).reshape(-1)
        if y.size != x.shape[0]:
            raise ValueError(f"sigma_decode: length {y.size} does not match {x.shape[0]} rows")
        ok = np.isfinite(y) & (y > 0)
        if not ok.all():
            i = int(np.argmin(ok))
            raise ValueError(f"sigma_decode[{i}] = {y[i]!r}: must be finite and > 0")
        ly = np.log(y)
        k = y.size
        w = self.forgetting ** np.arange(k - 1, -1, -1, dtype=np.float64)
        decay = self.forgetting**k
        xw = x * w[:, None]
        self._a = decay * self._a + x.T @ xw
        self._b = decay * self._b + xw.T @ ly
        self._syy = decay * self._syy + float(w @ (ly * ly))
        self._w = decay * self._w + float(w.sum())
        self._theta = self._solve()
        return self

    def _noise_var(self) -> float:
        """Log-residual variance of the unregularised least-squares fit (a function
        of the sufficient statistics only, so batch and one-by-one updates agree);
        the guess before 5 samples."""
        if self._w <= 4.0:
            return _NOISE_GUESS**2
        ols = np.linalg.pinv(self._a, hermitian=True) @ self._b
        rss = self._syy - float(ols @ self._b)
        return max(rss / max(self._w - 4.0, 1.0), _NOISE_FLOOR**2)

    def _solve(self) -> FloatArray:
        lam = np.full(4, self.prior_strength)
        if math.isfinite(self.exponent_prior_std):
            lam[1:] += self._noise_var() / self.exponent_prior_std**2
        m = self._a + np.diag(lam)
        theta = np.linalg.solve(m, self._b + lam * self.prior)
        if self.bounds is None:
            return np.asarray(theta, dtype=np.float64)
        lo, hi = self.bounds
        if ((theta[1:] >= lo) & (theta[1:] <= hi)).all():
            return np.asarray(theta, dtype=np.float64)
        # min (θ-θ̂)ᵀ M (θ-θ̂) in the box: ‖Lᵀθ - Lᵀθ̂‖² with M = L Lᵀ
        upper = np.linalg.cholesky(m).T
        box = lsq_linear(
            upper,
            upper @ theta,
            bounds=([-np.inf, lo, lo, lo], [np.inf, hi, hi, hi]),
            method="bvls",
        )
        return np.asarray(box.x, dtype=np.float64)

    @property
    def theta(self) -> FloatArray:
        """θ = (log scale, a, b, c), the fitted log-linear coefficients (the
        predictors' hot path reads it; a view, not a copy: do not write to it)."""
        return self._theta

    @property
    def coefficients(self) -> CascadeCoefficients:
        t = self._theta
        # weighted residual sum of squares: Σw(y − xθ)² = Syy − 2θᵀb + θᵀAθ
        rss = self._syy - 2.0 * float(t @ self._b) + float(t @ self._a @ t)
        dof = max(self._w - 4.0, 1.0)
        return CascadeCoefficients(
            log_scale=float(t[0]),
            a_prefill=float(t[1]),
            b_kv=float(t[2]),
            c_heterogeneity=float(t[3]),
            n_eff=self._w,
            residual_std=math.sqrt(max(rss, 0.0) / dof) if self._w > 4 else float("nan"),
        )

    def sigma_decode(
        self, sigma_prefill: ArrayLike, kv_pressure: ArrayLike, heterogeneity: ArrayLike
    ) -> FloatArray:
        """Predicted decode inter-token-latency σ (seconds) for each row."""
        x = _features(sigma_prefill, kv_pressure, heterogeneity)
        out: FloatArray = np.exp(x @ self._theta)
        return out

    def log_ratio(
        self,
        sigma_prefill_from: FloatArray,
        sigma_prefill_to: FloatArray,
        kv_from: FloatArray,
        kv_to: FloatArray,
    ) -> FloatArray:
        """log(σ_d(to) / σ_d(from)) at equal heterogeneity: the model's predicted
        relative change in decode σ. Inputs are assumed validated (hot path)."""
        t = self._theta
        out: FloatArray = t[1] * (np.log(sigma_prefill_to) - np.log(sigma_prefill_from)) + t[2] * (
            np.log1p(kv_to) - np.log1p(kv_from)
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "forgetting": self.forgetting,
            "prior_strength": self.prior_strength,
            "prior": self.prior.tolist(),
            # None for inf: the dict travels as strict JSON (checkpoints, status)
            "exponent_prior_std": (
                self.exponent_prior_std if math.isfinite(self.exponent_prior_std) else None
            ),
            "bounds": None if self.bounds is None else list(self.bounds),
            "a": self._a.tolist(),
            "b": self._b.tolist(),
            "syy": self._syy,
            "w": self._w,
            # the fit itself: a reader (every router and ingress, at each change,
            # 4 Hz) restores it instead of solving again (a bounded least squares
            # whenever an exponent is at its bound: ms of CPU the engines need)
            "theta": self._theta.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CascadeModel:
        bounds = d.get("bounds", EXPONENT_BOUNDS)
        m = cls(
            float(d["forgetting"]),
            float(d["prior_strength"]),
            tuple(d["prior"]),
            exponent_prior_std=float(d.get("exponent_prior_std") or math.inf),
            bounds=None if bounds is None else (float(bounds[0]), float(bounds[1])),
        )
        a, b = np.asarray(d["a"], dtype=np.float64), np.asarray(d["b"], dtype=np.float64)
        if (
            a.shape != (4, 4)
            or b.shape != (4,)
            or not (np.isfinite(a).all() and np.isfinite(b).all())
        ):
            raise ValueError("CascadeModel.from_dict: invalid state")
        m._a, m._b, m._syy, m._w = a, b, float(d["syy"]), float(d["w"])
        theta = d.get("theta")  # absent from states written before it was added
        fitted = None if theta is None else np.asarray(theta, dtype=np.float64)
        if fitted is not None and (fitted.shape != (4,) or not np.isfinite(fitted).all()):
            raise ValueError("CascadeModel.from_dict: invalid theta")
        m._theta = m._solve() if fitted is None else fitted
        return m
