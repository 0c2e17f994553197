"""Uncertainty backpressure: the step response on the synthetic plant
(bounds stated in docs/backpressure.md), restore, hysteresis and input checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.backpressure import (
    NoBackpressure,
    UncertaintyBackpressure,
    UncertaintyBackpressureParams,
)
from tests.unit.policies.fakes import StepLoadPlant, step_metrics

# The test configuration of docs/backpressure.md: defaults, but a floor low
# enough that the plant's equilibrium is inside the budget range.
PARAMS = UncertaintyBackpressureParams(min_fraction=0.01)
T_STEP = 10.0


def _step(plant: StepLoadPlant, up: bool = True, duration: float = 70.0) -> dict[str, np.ndarray]:
    a_star = plant.rate_at(PARAMS.sigma_high_s)
    lo, hi = 0.5 * a_star, 2.0 * a_star
    before, after = (lo, hi) if up else (hi, lo)
    return plant.run(
        UncertaintyBackpressure(PARAMS), lambda t: before if t < T_STEP else after, duration
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_step_up_settles_fast_without_oscillation_on_the_nominal_plant(seed: int) -> None:
    plant = StepLoadPlant(seed=seed)  # σ0 4 ms, a0 4k tok/s, elasticity 1.5, τ 1 s, noise 5 %
    run = _step(plant)
    final = float(run["admitted"][-20:].mean())
    m = step_metrics(run, T_STEP, final)
    assert m["settling_s"] <= 8.0  # stated: ≤ 8 s (measured ≈ 4.25 s)
    assert m["undershoot"] <= 0.05  # stated: ≤ 5 % below the final rate
    assert m["overshoot_after_entry"] <= 0.05
    assert m["crossings"] <= 1  # no oscillation around the final rate
    # the final rate keeps σ inside the hysteresis band [σ_low, σ_high] (+5 %)
    assert plant.rate_at(PARAMS.sigma_low_s) <= final <= 1.05 * plant.rate_at(PARAMS.sigma_high_s)
    # and σ is back under σ_high·1.05 within 5 s of the step
    late = run["t"] >= T_STEP + 5.0
    assert run["sigma"][late].max() <= 1.05 * PARAMS.sigma_high_s


@settings(max_examples=25, deadline=None)
@given(
    elasticity=st.floats(1.0, 2.5),
    tau_s=st.floats(0.5, 2.0),
    noise=st.floats(0.0, 0.05),
    seed=st.integers(0, 1000),
)
def test_step_up_bounds_hold_across_plants(
    elasticity: float, tau_s: float, noise: float, seed: int
) -> None:
    plant = StepLoadPlant(elasticity=elasticity, tau_s=tau_s, noise=noise, seed=seed)
    run = _step(plant)
    final = float(run["admitted"][-20:].mean())
    m = step_metrics(run, T_STEP, final)
    assert m["settling_s"] <= 25.0
    assert m["undershoot"] <= 0.05
    assert m["crossings"] <= 2
    assert (
        0.95 * plant.rate_at(PARAMS.sigma_low_s)
        <= final
        <= 1.05 * plant.rate_at(PARAMS.sigma_high_s)
    )


def test_step_down_restores_the_budget() -> None:
    plant = StepLoadPlant()
    run = _step(plant, up=False, duration=60.0)
    after = run["t"] >= T_STEP
    # the admitted rate follows the lower load at once (the budget was above it)
    np.testing.assert_allclose(run["admitted"][after], run["offered"][after])
    # and the budget is back to ≥ 95 % of its maximum within 20 s
    restored = run["t"][after & (run["budget"] >= 0.95 * PARAMS.max_prefill_tokens_per_s)]
    assert restored.size and restored[0] - T_STEP <= 20.0


def test_hysteresis_band_holds() -> None:
    bp = UncertaintyBackpressure(PARAMS)
    states = [bp.update("p", 0.25 * k, 0.0175, 0.0) for k in range(40)]  # inside [15, 20] ms
    assert {s.action for s in states} == {"hold"}
    assert all(s.prefill_token_budget == PARAMS.max_prefill_tokens_per_s for s in states)
    assert all(not s.hold and 0.8 < s.saturation < 1.0 for s in states)


def test_saturation_and_floor() -> None:
    bp = UncertaintyBackpressure(PARAMS)
    for k in range(400):
        st_ = bp.update("p", 0.25 * k, 0.1, 0.0)
    assert st_.hold and st_.saturation == pytest.approx(5.0)
    assert st_.budget_fraction == pytest.approx(PARAMS.min_fraction)
    assert st_.prefill_token_budget == int(PARAMS.min_fraction * PARAMS.max_prefill_tokens_per_s)
    assert bp.state("p") == st_ and bp.state("other") is None


def test_bumpless_snap_to_admitted_rate() -> None:
    bp = UncertaintyBackpressure(PARAMS)
    bp.update("p", 0.0, 0.01, 0.0)
    st_ = bp.update("p", 0.25, 0.03, 0.0, admitted_prefill_tokens_per_s=5000.0)
    # snapped to 5000 · 1.1, then one integration step down
    assert st_.action == "decrease" and 4000 < st_.prefill_token_budget <= 5500


def test_pools_are_independent_and_per_pool_maxima_apply() -> None:
    bp = UncertaintyBackpressure(
        UncertaintyBackpressureParams(pool_max_prefill_tokens_per_s={"h100": 200_000})
    )
    assert bp.update("h100", 0.0, 0.001).prefill_token_budget == 200_000
    for k in range(20):
        bp.update("a100", 0.25 * k, 0.1)
    assert bp.state("h100").prefill_token_budget == 200_000  # type: ignore[union-attr]
    assert bp.state("a100").prefill_token_budget < 100_000  # type: ignore[union-attr]


def test_bad_inputs_change_nothing() -> None:
    bp = UncertaintyBackpressure()
    before = bp.update("p", 1.0, 0.01)
    for args in [(2.0, float("nan")), (2.0, -1.0), (0.5, 0.01)]:
        with pytest.raises(ValueError):
            bp.update("p", *args)
    assert bp.state("p") == before


def test_none_never_limits() -> None:
    st_ = NoBackpressure().update("p", 0.0, 10.0)
    assert st_.saturation == 0.0 and not st_.hold and st_.budget_fraction == 1.0
