"""The router hot path changed ``uncertainty.predict_latency`` (cached per-load
terms, one-pass CDFs, ``ReplicaLoad.with_queue_wait``): it must give the same
numbers as the plain formulas of the module docstring, written out here."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from policies import ReplicaView, build_view
from policies.scorers.uncertainty import UncertaintyScorer
from policies.slo import SloClass, meet_probability, predict_request, slo_for
from replicas.telemetry import RequestInfo
from tests.unit.policies.fakes import request, snap
from uncertainty import CascadeModel, ReplicaLoad, predict_latency
from uncertainty.prediction import predict_slo_probability


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


# replica count, seed of the replica states, and the request: prompt tokens,
# expected output length and its σ
CASES = {
    "r": st.integers(1, 12),
    "seed": st.integers(0, 10_000),
    "p": st.integers(0, 20_000),
    "length": st.floats(1.0, 4000.0),
    "sd": st.floats(0.0, 500.0),
}


def _fitted_model(rng: np.random.Generator, k: int = 50) -> CascadeModel:
    """A cascade model fitted to k random observations (θ away from the prior)."""
    return CascadeModel().update(
        rng.uniform(1e-3, 0.05, k),
        rng.uniform(0, 1, k),
        rng.uniform(1, 2, k),
        rng.uniform(1e-3, 0.05, k),
    )


def _random_load(rng: np.random.Generator, r: int, queue_sd_zero_frac: float = 0.2) -> ReplicaLoad:
    """R replicas in random states; a fraction of them with no queue-wait σ and
    ~30 % with no ITL history (σ_ITL = 0: the cascade model's σ)."""
    return ReplicaLoad(
        queue_wait_mean_s=rng.uniform(0, 2, r),
        queue_wait_std_s=np.where(rng.random(r) < queue_sd_zero_frac, 0.0, rng.uniform(0, 1, r)),
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


@settings(max_examples=60, deadline=None)
@given(
    **CASES,
    fitted=st.booleans(),
)
def test_fast_path_equals_the_formulas(
    r: int, seed: int, p: int, length: float, sd: float, fitted: bool
) -> None:
    rng = np.random.default_rng(seed)
    model = _fitted_model(rng) if fitted else CascadeModel()
    load = _random_load(rng, r, queue_sd_zero_frac=0.0)
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


# ---- the router's fast path: predict_slo_probability and the scorer ---------------


@settings(max_examples=60, deadline=None)
@given(
    **CASES,
    ttft_slo=st.floats(1e-3, 10.0),
    e2e_slo=st.floats(1e-3, 500.0),
)
def test_slo_probability_equals_prediction_bit_for_bit(
    r: int, seed: int, p: int, length: float, sd: float, ttft_slo: float, e2e_slo: float
) -> None:
    rng = np.random.default_rng(seed)
    model = CascadeModel()
    load = _random_load(rng, r)
    queue = (rng.uniform(0, 3, r), rng.uniform(0, 1, r))
    for current in (load, load, load.with_queue_wait(*queue)):
        pred = predict_latency(model, current, p, length, sd)
        prob, mean = predict_slo_probability(model, current, p, length, sd, ttft_slo, e2e_slo)
        # same operations in the same order: equal, not merely close
        np.testing.assert_array_equal(prob, pred.prob_within(ttft_slo, e2e_slo))
        np.testing.assert_array_equal(mean, pred.e2e_mean_s)


def test_slo_probability_rejects_bad_inputs() -> None:
    load = _random_load(np.random.default_rng(0), 3)
    with pytest.raises(ValueError):
        predict_slo_probability(CascadeModel(), load, 10, 5.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        predict_slo_probability(CascadeModel(), load, -1, 5.0, 0.0, 1.0, 1.0)


def _generic_score(
    scorer: UncertaintyScorer, req: RequestInfo, view: ReplicaView, cand: np.ndarray
):  # type: ignore[no-untyped-def]
    """The scorer's formula on the full LatencyPrediction (the pre-fast-path code)."""
    pred = predict_request(scorer.model, view, req, scorer.params.output_cv)
    prob = meet_probability(
        pred, slo_for(scorer.params.slos, req.slo_class), req.expected_output_tokens
    )[cand]
    mean = pred.e2e_mean_s[cand]
    slo = slo_for(scorer.params.slos, req.slo_class)
    target = slo.e2e_target_s(req.expected_output_tokens)
    assert target is not None
    return 0.999 * prob + (1e-3 * target) / (mean + target)


@pytest.mark.parametrize("fitted", [False, True])
def test_uncertainty_scorer_fast_path_equals_generic(fitted: bool) -> None:
    rng = np.random.default_rng(7)
    model = _fitted_model(rng) if fitted else CascadeModel()
    snaps = [
        snap(
            f"r{i}",
            running=int(rng.integers(0, 40)),
            waiting=int(rng.integers(0, 5)),
            waiting_prefill_tokens=int(rng.integers(0, 4000)),
            kv_used=int(rng.integers(0, 1000)),
            itl=None if i % 5 == 0 else (0.02 + 0.01 * rng.random(), 0.005 * rng.random()),
            itl_autocorr=float(rng.uniform(-0.5, 0.9)),
        )
        for i in range(16)
    ]
    base = build_view(snaps, None, 0.1)
    scorer = UncertaintyScorer(model=model)
    scorer.set_slos(
        {"default": SloClass(ttft_s=2.0, tpot_s=0.1), "batch": SloClass(ttft_s=5.0, e2e_s=60.0)}
    )
    all_idx = base.indices
    some = np.array([0, 3, 4, 9, 15])
    for k in range(40):
        view = base.with_outstanding({f"r{k % 16}": k % 9})
        req = request(
            rid=f"q{k}",
            prompt=int(rng.integers(1, 8000)),
            max_tokens=int(rng.choice([1, 64, 512])),
            predicted=None if k % 2 else float(rng.uniform(1, 400)),
            slo_class=("default", "batch", "interactive")[k % 3],
        )
        for cand in (all_idx, some):
            np.testing.assert_array_equal(
                scorer.score(req, view, cand), _generic_score(scorer, req, view, cand)
            )
