"""Latency quantiles mixed over the output length: exact for one length, equal to
a Monte Carlo of the mixture for many."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtri

from uncertainty import CascadeModel, ReplicaLoad
from uncertainty.request_quantiles import mixture_quantiles, request_quantiles


def _load() -> ReplicaLoad:
    one = np.ones(1)
    return ReplicaLoad(
        queue_wait_mean_s=0.05 * one, queue_wait_std_s=0.02 * one,
        prefill_s_per_token=2e-4 * one, prefill_cv=0.2 * one, itl_mean_s=0.03 * one,
        itl_std_s=0.01 * one, itl_autocorr=0.5 * one, sigma_prefill_s=0.005 * one,
        kv_pressure=0.3 * one, kv_capacity_tokens=1e5 * one, heterogeneity=one,
    )  # fmt: skip


def test_one_component_is_the_lognormal_quantile() -> None:
    mean, var = 2.0, 0.5
    s2 = np.log1p(var / mean**2)
    mu = np.log(mean) - s2 / 2
    expect = np.exp(mu + np.sqrt(s2) * ndtri([0.5, 0.9, 0.99]))
    np.testing.assert_allclose(mixture_quantiles([mean], [var], [0.5, 0.9, 0.99]), expect)


def test_mixture_matches_monte_carlo() -> None:
    rng = np.random.default_rng(5)
    means, vars_ = np.array([1.0, 3.0, 10.0]), np.array([0.1, 1.0, 4.0])
    s2 = np.log1p(vars_ / means**2)
    mu = np.log(means) - s2 / 2
    k = rng.integers(0, 3, 400_000)
    x = np.exp(mu[k] + np.sqrt(s2[k]) * rng.standard_normal(k.size))
    got = mixture_quantiles(means, vars_, [0.5, 0.9, 0.99])
    np.testing.assert_allclose(got, np.quantile(x, [0.5, 0.9, 0.99]), rtol=0.02)


def test_longer_answers_widen_e2e_not_ttft() -> None:
    model, load = CascadeModel(), _load()
    short = request_quantiles(model, load, 0, 500, [50.0])
    spread = request_quantiles(model, load, 0, 500, [10.0, 50.0, 400.0])
    np.testing.assert_allclose(short[0], spread[0])  # TTFT does not depend on L
    assert spread[2, 2] > short[2, 2] * 3  # E2E P99 follows the long answers
    assert np.all(np.diff(spread, axis=1) > 0)  # P50 < P90 < P99 per metric
    with pytest.raises(ValueError, match="output length"):
        request_quantiles(model, load, 0, 500, [np.nan])
