"""Lognormal matched to a mean and a variance: quantiles and CDFs of latencies.

Latencies are positive and right-skewed; a prediction gives each one's mean m and
variance v, and its quantiles and SLO probabilities come from the lognormal with
those moments: s² = log(1 + v/m²), μ = log m − s²/2. Means are floored at 1e-12 s
before the log (a zero mean is a point mass at 0, not an error).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr, ndtri

from uncertainty.validation import FloatArray

_EPS = 1e-12  # floor of a mean (s) before its log, and of s before dividing by it


def check_slo(x: float) -> None:
    """``ValueError`` unless ``x`` (an SLO, seconds) is > 0."""
    if not x > 0:
        raise ValueError(f"SLO must be > 0 seconds, got {x!r}")


def lognormal_params(mean: FloatArray, var: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(μ, s) of the lognormal with mean ``mean`` and variance ``var``."""
    m = np.maximum(mean, _EPS)
    s2 = np.log1p(var / (m * m))
    return np.log(m) - 0.5 * s2, np.sqrt(s2)


def lognormal_quantile(mean: FloatArray, var: FloatArray, q: float) -> FloatArray:
    """The ``q`` quantile, q in (0, 1) (``ValueError`` otherwise)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q!r}")
    mu, s = lognormal_params(mean, var)
    out: FloatArray = np.exp(mu + s * float(ndtri(q)))
    return out


def lognormal_cdf(mean: FloatArray, var: FloatArray, x: float) -> FloatArray:
    """P(X ≤ ``x``), x > 0 seconds (``ValueError`` otherwise)."""
    check_slo(x)
    # z = (log x − μ)/s with μ = log m − s²/2, written to save array operations
    m = np.maximum(mean, _EPS)
    s2 = np.log1p(var / (m * m))
    z = (math.log(x) - np.log(m) + 0.5 * s2) / np.maximum(np.sqrt(s2), _EPS)
    out: FloatArray = ndtr(z)
    return out
