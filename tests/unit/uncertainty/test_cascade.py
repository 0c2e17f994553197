"""CascadeModel: recovers known coefficients; the prior is the multiplicative law."""

import math

import numpy as np
import pytest

from uncertainty import CascadeModel
from uncertainty.cascade import EXPONENT_BOUNDS


def _synthetic(n: int, theta: tuple[float, float, float, float], noise: float, seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    sp = rng.lognormal(np.log(0.02), 0.6, n)
    kv = rng.uniform(0.0, 1.0, n)
    h = 1.0 + rng.exponential(0.5, n)
    log_sd = theta[0] + theta[1] * np.log(sp) + theta[2] * np.log1p(kv) + theta[3] * np.log(h)
    sd = np.exp(log_sd + rng.normal(0.0, noise, n))
    return sp, kv, h, sd


@pytest.mark.parametrize(
    "theta",
    [(0.0, 1.0, 1.0, 1.0), (math.log(0.7), 0.8, 2.0, 1.3), (math.log(1.5), 1.2, 0.5, 0.7)],
)
def test_recovers_known_coefficients_within_5_percent(theta) -> None:  # type: ignore[no-untyped-def]
    sp, kv, h, sd = _synthetic(6000, theta, noise=0.1, seed=11)
    m = CascadeModel(forgetting=1.0)
    for part in np.array_split(np.arange(sp.size), 12):
        m.update(sp[part], kv[part], h[part], sd[part])
    c = m.coefficients
    got = (c.scale, c.a_prefill, c.b_kv, c.c_heterogeneity)
    want = (math.exp(theta[0]), theta[1], theta[2], theta[3])
    for g, w in zip(got, want, strict=True):
        assert abs(g - w) <= 0.05 * abs(w), (got, want)
    assert abs(c.residual_std - 0.1) < 0.01


def test_without_data_it_is_the_multiplicative_law() -> None:
    m = CascadeModel()
    pred = m.sigma_decode([0.01, 0.02], [0.5, 0.0], [1.2, 1.0])
    np.testing.assert_allclose(pred, [0.01 * 1.5 * 1.2, 0.02], rtol=1e-12)


def test_forgetting_tracks_a_regime_change() -> None:
    m = CascadeModel(forgetting=0.99)
    sp, kv, h, sd = _synthetic(3000, (0.0, 1.0, 1.0, 1.0), 0.05, seed=1)
    m.update(sp, kv, h, sd)
    sp, kv, h, sd = _synthetic(3000, (0.0, 1.0, 3.0, 1.0), 0.05, seed=2)  # KV matters more
    m.update(sp, kv, h, sd)
    assert abs(m.coefficients.b_kv - 3.0) < 0.15


def test_batch_update_equals_one_by_one() -> None:
    sp, kv, h, sd = _synthetic(200, (0.1, 0.9, 1.5, 1.1), 0.2, seed=3)
    a, b = CascadeModel(forgetting=0.98), CascadeModel(forgetting=0.98)
    a.update(sp, kv, h, sd)
    for i in range(sp.size):
        b.update(sp[i], kv[i], h[i], sd[i])
    np.testing.assert_allclose(
        a.sigma_decode(0.02, 0.3, 1.5), b.sigma_decode(0.02, 0.3, 1.5), rtol=1e-9
    )
    restored = CascadeModel.from_dict(a.to_dict())
    assert restored.coefficients == a.coefficients


def test_state_carries_its_fit_and_older_states_are_solved_again() -> None:
    sp, kv, h, sd = _synthetic(300, (0.1, 0.9, 1.5, 1.1), 0.2, seed=4)
    m = CascadeModel(forgetting=0.99).update(sp, kv, h, sd)
    state = m.to_dict()
    np.testing.assert_array_equal(state["theta"], m.theta)
    old = {k: v for k, v in state.items() if k != "theta"}  # a checkpoint from before
    np.testing.assert_allclose(CascadeModel.from_dict(old).theta, m.theta, rtol=1e-9)
    for bad in ([0.0, 1.0], [0.0, 1.0, float("nan"), 1.0]):
        with pytest.raises(ValueError, match="theta"):
            CascadeModel.from_dict({**state, "theta": bad})


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.0, 0.5, 1.0, 0.01), "sigma_prefill"),
        ((0.01, 1.5, 1.0, 0.01), "kv_pressure"),
        ((0.01, 0.5, 0.5, 0.01), "heterogeneity"),
        ((0.01, 0.5, 1.0, float("nan")), "sigma_decode"),
        (([0.01, 0.02], 0.5, 1.0, [0.01]), "does not match"),
    ],
)
def test_bad_input_refused_without_corrupting(args, match) -> None:  # type: ignore[no-untyped-def]
    m = CascadeModel().update(0.01, 0.2, 1.1, 0.012)
    before = m.to_dict()
    with pytest.raises(ValueError, match=match):
        m.update(*args)
    assert m.to_dict() == before


def _collinear(n: int, seed: int):  # type: ignore[no-untyped-def]
    """The shape seen on Ray: KV usage spans 3 % and moves with load, σ_prefill
    drifts down with load, and load raises decode σ through a term the model
    does not have (θ = (0, 1, 1, 1) plus 1.5·load)."""
    rng = np.random.default_rng(seed)
    load = rng.uniform(0.0, 1.0, n)
    sp = np.exp(np.log(0.05) - 0.3 * load + rng.normal(0, 0.05, n))
    kv = np.clip(0.03 * load + rng.normal(0, 0.002, n), 0.0, 1.0)
    h = 1.0 + 0.3 * load + rng.uniform(0, 0.05, n)
    log_sd = np.log(sp) + np.log1p(kv) + np.log(h) + 1.5 * load + rng.normal(0, 0.1, n)
    return sp, kv, h, np.exp(log_sd)


def test_collinear_data_stay_in_bounds_where_least_squares_explodes() -> None:
    data = _collinear(2000, seed=5)
    ols = CascadeModel(forgetting=1.0, exponent_prior_std=math.inf, bounds=None).update(*data)
    # unconstrained least squares reproduces the Ray fit's KV exponent (~11)
    assert ols.coefficients.b_kv > 5.0
    fit = CascadeModel(forgetting=1.0).update(*data)
    lo, hi = EXPONENT_BOUNDS
    for v in fit.theta[1:]:
        assert lo - 1e-9 <= v <= hi + 1e-9, fit.theta
    # the bounded fit still predicts the data it saw about as well as the mean does
    x_sd = fit.sigma_decode(data[0], data[1], data[2])
    assert np.median(np.abs(np.log(x_sd / data[3]))) < 0.5


def test_regularised_default_recovers_well_conditioned_coefficients() -> None:
    sp, kv, h, sd = _synthetic(2000, (math.log(0.7), 0.8, 1.5, 0.6), noise=0.1, seed=7)
    fit = CascadeModel(forgetting=1.0).update(sp, kv, h, sd)
    # exponents within 0.03; the scale within 0.05 (log σ_prefill centres near -4,
    # so the intercept carries the exponents' error ×4)
    np.testing.assert_allclose(fit.theta[1:], [0.8, 1.5, 0.6], atol=0.03)
    assert abs(fit.theta[0] - math.log(0.7)) < 0.05


def test_bounds_and_prior_are_validated() -> None:
    with pytest.raises(ValueError, match="bounds"):
        CascadeModel(bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="outside bounds"):
        CascadeModel(prior=(0.0, 4.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="exponent_prior_std"):
        CascadeModel(exponent_prior_std=0.0)
