"""The router hot path changed ``uncertainty.predict_latency`` (cached per-load
terms, one-pass CDFs, ``ReplicaLoad.with_queue_wait``): it must give the same
numbers as the plain formulas of the module docstring, written out here."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from uncertainty import CascadeModel, ReplicaLoad, predict_latency


def _reference(model: CascadeModel, load: ReplicaLoad, p: int, length: float, sd: float):  # type: ignore[no-untyped-def]
    prefill_mean = p * load.prefill_s_per_token
    prefill_sd = load.prefill_cv * prefill_mean
    ttft_mean = load.queue_wait_mean_s + prefill_mean
    ttft_var = load.queue_wait_std_s**2 + prefill_sd**2
    sp_from = np.maximum(load.sigma_prefill_s, 1e-12)
    sp_to = np.sqrt(sp_from**2 + prefill_sd**2)
    kv_from = np.clip(load.kv_pressure, 0, 1)
    kv_to = np.clip(kv_from + (p + length) / np.maximum(load.kv_capacity_tokens, 1.0), 0, 1)
    model_sd = model.sigma_decode(sp_to, kv_to, np.maximum(load.heterogeneity, 1.0))
    scaled = load.itl_std_s * np.exp(model.log_ratio(sp_from, sp_to, kv_from, kv_to))
    itl_sd = np.where(load.itl_std_s > 0, scaled, model_sd)
    rho = np.clip(load.itl_autocorr, -0.95, 0.95)
    n = max(length - 1, 0)
    e2e_mean = ttft_mean + n * load.itl_mean_s
    e2e_var = ttft_var + n * itl_sd**2 * (1 + rho) / (1 - rho) + (load.itl_mean_s * sd) ** 2
    return ttft_mean, ttft_var, e2e_mean, e2e_var, itl_sd


def _lognormal_cdf(mean: np.ndarray, var: np.ndarray, x: float) -> np.ndarray:
    s2 = np.log1p(var / mean**2)
    return norm.cdf((np.log(x) - (np.log(mean) - s2 / 2)) / np.sqrt(s2))


pos = st.floats(1e-4, 1.0)


@settings(max_examples=60, deadline=None)
@given(
    r=st.integers(1, 12),
    seed=st.integers(0, 10_000),
    p=st.integers(0, 20_000),
    length=st.floats(1.0, 4000.0),
    sd=st.floats(0.0, 500.0),
    fitted=st.booleans(),
)
def test_fast_path_equals_the_formulas(
    r: int, seed: int, p: int, length: float, sd: float, fitted: bool
) -> None:
    rng = np.random.default_rng(seed)
    model = CascadeModel()
    if fitted:
        k = 50
        model.update(
            rng.uniform(1e-3, 0.05, k),
            rng.uniform(0, 1, k),
            rng.uniform(1, 2, k),
            rng.uniform(1e-3, 0.05, k),
        )
    load = ReplicaLoad(
        queue_wait_mean_s=rng.uniform(0, 2, r),
        queue_wait_std_s=rng.uniform(0, 1, r),
        prefill_s_per_token=rng.uniform(1e-5, 1e-3, r),
        prefill_cv=rng.uniform(0, 1, r),
        itl_mean_s=rng.uniform(5e-3, 0.1, r),
        itl_std_s=np.where(rng.random(r) < 0.3, 0.0, rng.uniform(1e-3, 0.05, r)),
        itl_autocorr=rng.uniform(-0.99, 0.99, r),
        sigma_prefill_s=rng.uniform(1e-4, 0.05, r),
        kv_pressure=rng.uniform(0, 1, r),
        kv_capacity_tokens=rng.uniform(1e3, 1e6, r),
        heterogeneity=rng.uniform(1, 3, r),
    )
    queue = (rng.uniform(0, 3, r), rng.uniform(0, 1, r))
    for current in (load, load, load.with_queue_wait(*queue)):  # cold, cached, shared terms
        got = predict_latency(model, current, p, length, sd)
        want = _reference(model, current, p, length, sd)
        for g, w in zip(
            (got.ttft_mean_s, got.ttft_var_s2, got.e2e_mean_s, got.e2e_var_s2, got.itl_std_s),
            want,
            strict=True,
        ):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-15)
        ttft_slo, e2e_slo = 1.0, 1.0 + 0.05 * length
        both = _lognormal_cdf(want[0], want[1], ttft_slo) * _lognormal_cdf(
            want[2], want[3], e2e_slo
        )
        np.testing.assert_allclose(got.prob_within(ttft_slo, e2e_slo), both, atol=1e-9)
        np.testing.assert_allclose(
            got.prob_within(None, e2e_slo), _lognormal_cdf(want[2], want[3], e2e_slo), atol=1e-9
        )
