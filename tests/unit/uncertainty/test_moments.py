"""Moments: exact merging (property-based) and bad input that corrupts nothing."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uncertainty import Moments, Summary

samples = st.lists(
    st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False),
    min_size=2,
    max_size=200,
)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


@settings(max_examples=200, deadline=None)
@given(samples, st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_merge_of_any_split_equals_single_pass(xs: list[float], cuts: list[int]) -> None:
    x = np.array(xs)
    whole = Moments().update(x)
    bounds = sorted({0, len(x), *(c % (len(x) + 1) for c in cuts)})
    merged = Moments()
    for a, b in itertools.pairwise(bounds):
        if b > a:
            merged.merge(Moments().update(x[a:b]))
    assert merged.n == whole.n == len(x)
    assert _rel(merged.mean, float(np.mean(x))) <= 1e-9 or abs(merged.mean - np.mean(x)) < 1e-9
    assert _rel(merged.mean, whole.mean) <= 1e-9 or abs(merged.mean - whole.mean) < 1e-12
    exact_var = float(np.var(x, ddof=1))
    assert abs(merged.var - whole.var) <= 1e-9 * max(whole.var, 1e-12) + 1e-12
    assert abs(whole.var - exact_var) <= 1e-9 * max(exact_var, 1e-12) + 1e-12


def test_values_against_numpy_large_offset() -> None:
    # A large common offset is where naive Σx² formulas lose all precision.
    rng = np.random.default_rng(7)
    x = 1e9 + rng.standard_normal(100_000)
    m = Moments()
    for chunk in np.array_split(x, 97):
        m.update(chunk)
    assert m.n == x.size
    assert abs(m.mean - x.mean()) / x.mean() < 1e-12
    assert abs(m.var - x.var(ddof=1)) / x.var(ddof=1) < 1e-6


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([1.0, float("nan")], r"values\[1\].*finite"),
        ([float("inf")], r"finite"),
        ([1.0, -0.5], r"values\[1\].*>= 0"),
        ([], "empty"),
        ([[1.0, 2.0]], "1-D"),
    ],
)
def test_bad_input_raises_and_leaves_state(bad: list[float], match: str) -> None:
    m = Moments().update([1.0, 2.0, 3.0])
    before = m.to_dict()
    with pytest.raises(ValueError, match=match):
        m.update(bad)
    assert m.to_dict() == before


def test_negative_values_allowed_when_asked() -> None:
    m = Moments(nonnegative=False).update([-1.0, 1.0])
    assert m.mean == 0.0 and m.var == 2.0


def test_roundtrip_and_corrupt_state_refused() -> None:
    m = Moments().update([1.0, 2.0, 4.0])
    assert Moments.from_dict(m.to_dict()).to_dict() == m.to_dict()
    with pytest.raises(ValueError):
        Moments.from_dict({"n": 3, "mean": float("nan"), "m2": 1.0})


def test_summary_merge_is_exact_for_moments_and_counts() -> None:
    rng = np.random.default_rng(3)
    x = rng.lognormal(size=5000)
    a, b = Summary().update(x[:1234]), Summary().update(x[1234:])
    whole = Summary().update(x)
    merged = a.copy().merge(b)
    assert merged.n == whole.n
    assert abs(merged.mean - whole.mean) / whole.mean < 1e-12
    assert abs(merged.var - whole.var) / whole.var < 1e-9
    np.testing.assert_array_equal(
        merged.quantiles([0.5, 0.9, 0.99]), whole.quantiles([0.5, 0.9, 0.99])
    )
    assert Summary.from_dict(merged.to_dict()).quantile(0.99) == merged.quantile(0.99)
