"""The lognormal matched to a mean and a variance."""

from __future__ import annotations

import numpy as np
import pytest

from uncertainty.lognormal import lognormal_cdf, lognormal_params, lognormal_quantile


def test_matched_moments_and_inverse_quantiles() -> None:
    mean, var = np.array([0.05, 1.0, 30.0]), np.array([1e-4, 0.5, 400.0])
    mu, s = lognormal_params(mean, var)
    np.testing.assert_allclose(np.exp(mu + s**2 / 2), mean, rtol=1e-12)
    np.testing.assert_allclose((np.exp(s**2) - 1) * np.exp(2 * mu + s**2), var, rtol=1e-9)
    for q in (0.01, 0.5, 0.99):
        x = lognormal_quantile(mean, var, q)
        for i in range(3):
            assert lognormal_cdf(mean[i : i + 1], var[i : i + 1], float(x[i]))[0] == (
                pytest.approx(q, abs=1e-12)
            )


def test_bad_quantile_or_slo() -> None:
    with pytest.raises(ValueError, match="quantile"):
        lognormal_quantile(np.ones(1), np.ones(1), 0.0)
    with pytest.raises(ValueError, match="SLO"):
        lognormal_cdf(np.ones(1), np.ones(1), -1.0)
