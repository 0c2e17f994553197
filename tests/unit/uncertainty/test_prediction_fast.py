"""The fast path (``uncertainty.prediction_fast``) gives the numbers of the
readable reference (``uncertainty.prediction_reference``), and its two entry
points (``predict_latency(...).prob_within`` and ``predict_slo_probability``)
give each other's bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import fitted_cascade_model, random_load
from uncertainty import CascadeModel, predict_latency
from uncertainty.lognormal import lognormal_cdf
from uncertainty.prediction import predict_slo_probability
from uncertainty.prediction_reference import reference_latency, reference_slo_probability

# replica count, seed of the replica states, and the request: prompt tokens,
# expected output length and its σ
CASES = {
    "r": st.integers(1, 12),
    "seed": st.integers(0, 10_000),
    "p": st.integers(0, 20_000),
    "length": st.floats(1.0, 4000.0),
    "sd": st.floats(0.0, 500.0),
}
MOMENTS = ("ttft_mean_s", "ttft_var_s2", "e2e_mean_s", "e2e_var_s2", "itl_std_s")


@settings(max_examples=60, deadline=None)
@given(**CASES, fitted=st.booleans())
def test_fast_path_equals_the_reference(
    r: int, seed: int, p: int, length: float, sd: float, fitted: bool
) -> None:
    rng = np.random.default_rng(seed)
    model = fitted_cascade_model(rng) if fitted else CascadeModel()
    load = random_load(rng, r, queue_sd_zero_frac=0.0)
    queue = (rng.uniform(0, 3, r), rng.uniform(0, 1, r))
    extra = (rng.uniform(0, 1, r), rng.uniform(0, 0.5, r))
    refreshed = (load.with_queue_wait(*queue), load.with_added_queue(*extra))
    for current in (load, load, *refreshed):  # cold, cached, shared terms
        got = predict_latency(model, current, p, length, sd)
        want = reference_latency(model, current, p, length, sd)
        for name in MOMENTS:
            np.testing.assert_allclose(
                getattr(got, name), getattr(want, name), rtol=1e-9, atol=1e-15, err_msg=name
            )
        ttft_slo, e2e_slo = 1.0, 1.0 + 0.05 * length
        both = reference_slo_probability(model, current, p, length, sd, ttft_slo, e2e_slo)
        np.testing.assert_allclose(got.prob_within(ttft_slo, e2e_slo), both, atol=1e-9)
        e2e_only = lognormal_cdf(want.e2e_mean_s, want.e2e_var_s2, e2e_slo)
        np.testing.assert_allclose(got.prob_within(None, e2e_slo), e2e_only, atol=1e-9)
        prob, _ = predict_slo_probability(model, current, p, length, sd, ttft_slo, e2e_slo)
        np.testing.assert_allclose(prob, both, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(**CASES, ttft_slo=st.floats(1e-3, 10.0), e2e_slo=st.floats(1e-3, 500.0))
def test_slo_probability_equals_prediction_bit_for_bit(
    r: int, seed: int, p: int, length: float, sd: float, ttft_slo: float, e2e_slo: float
) -> None:
    rng = np.random.default_rng(seed)
    model = CascadeModel()
    load = random_load(rng, r)
    queue = (rng.uniform(0, 3, r), rng.uniform(0, 1, r))
    for current in (load, load, load.with_queue_wait(*queue)):
        pred = predict_latency(model, current, p, length, sd)
        prob, mean = predict_slo_probability(
            model, current, p, length, sd, ttft_slo, e2e_slo, e2e_shift_s=2.5
        )
        # same operations in the same order: equal, not merely close
        np.testing.assert_array_equal(prob, pred.prob_within(ttft_slo, e2e_slo))
        np.testing.assert_array_equal(mean, pred.e2e_mean_s + 2.5)


def test_a_one_token_request_has_no_decode_term() -> None:
    """L = 1: no inter-token gap, so E2E = TTFT exactly (the fast path's "log 0")."""
    load = random_load(np.random.default_rng(3), 8)
    pred = predict_latency(CascadeModel(), load, 500, 1.0)
    np.testing.assert_array_equal(pred.e2e_mean_s, pred.ttft_mean_s)
    np.testing.assert_array_equal(pred.e2e_var_s2, pred.ttft_var_s2)


def test_slo_probability_rejects_bad_inputs() -> None:
    load = random_load(np.random.default_rng(0), 3)
    with pytest.raises(ValueError, match="SLOs must be finite"):
        predict_slo_probability(CascadeModel(), load, 10, 5.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="prompt_tokens=-1"):
        predict_slo_probability(CascadeModel(), load, -1, 5.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="output_tokens_std"):
        predict_slo_probability(CascadeModel(), load, 10, 5.0, float("nan"), 1.0, 1.0)
