"""Tail factors κ for the chance constraint ``P(T > slo) <= 1 - q``.

The optimizer enforces ``mean + κ·σ <= slo`` per (class, pool). Which κ makes
that imply the chance constraint depends on what is known about the latency
distribution:

* :func:`cantelli_kappa` — any distribution with that mean and variance
  (Cantelli's one-sided Chebyshev bound). Safe and conservative: κ ≈ 9.95 at P99.
* :func:`gaussian_kappa` — the Gaussian quantile (κ ≈ 2.33 at P99): only when the
  latency is close to normal, which LLM latencies usually are not.
* A fitted factor: ``(observed q-quantile - mean) / σ`` from telemetry, passed as
  :attr:`optim.specs.ClassSpec.tail_factor`.
"""

from __future__ import annotations

import math

from scipy.stats import norm


def _check_quantile(q: float) -> None:
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")


def cantelli_kappa(q: float) -> float:
    """Distribution-free κ: ``P(T >= μ + κσ) <= 1 / (1 + κ²) = 1 - q``.

    Raises:
        ValueError: if ``q`` is not in (0, 1).
    """
    _check_quantile(q)
    return math.sqrt(q / (1.0 - q))


def gaussian_kappa(q: float) -> float:
    """κ of a normal distribution: its ``q`` quantile in standard deviations.

    Raises:
        ValueError: if ``q`` is not in (0, 1).
    """
    _check_quantile(q)
    return float(norm.ppf(q))
