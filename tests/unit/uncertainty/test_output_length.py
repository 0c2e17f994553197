"""Output-length model: quantiles of a known distribution, the max_tokens cap,
fallback to coarser keys, exact merge, state round trip, bad input refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uncertainty.output_length import FLUSH_EVERY, OutputLengthModel

MEDIAN, SIGMA = 129.0, 0.8  # the Azure conversation trace's median, a lognormal spread


def _lengths(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.maximum(np.rint(MEDIAN * np.exp(SIGMA * rng.standard_normal(n))), 1.0)


def _trained(
    lengths: np.ndarray, *, prompt: int = 500, max_tokens: int = 4096
) -> OutputLengthModel:
    m = OutputLengthModel()
    for y in lengths:
        m.observe("interactive", prompt, max_tokens, float(min(y, max_tokens)))
    return m


def test_quantiles_match_the_known_distribution() -> None:
    # 20,000 lognormal lengths (seed 0): the predicted P50/P90/P99 are within 5 %
    # of the distribution's true quantiles (sketch α = 2 % + sampling error ≈ 1-2 %)
    m = _trained(_lengths(20_000, seed=0))
    pred = m.predict("interactive", 500, 4096)
    # all but the last < FLUSH_EVERY completions are folded in
    assert pred is not None and pred.level == 3 and pred.samples > 20_000 - FLUSH_EVERY
    for q in (0.5, 0.9, 0.99):
        true = MEDIAN * math.exp(SIGMA * float(_ndtri(q)))
        assert pred.quantile(q) == pytest.approx(true, rel=0.05), q
    # the grid is the distribution: its mean is the lognormal mean within 5 %
    assert pred.mean == pytest.approx(MEDIAN * math.exp(SIGMA**2 / 2), rel=0.05)


def _ndtri(q: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(q))


def test_prediction_is_capped_by_the_requests_max_tokens() -> None:
    m = _trained(_lengths(5_000, seed=1), max_tokens=4096)
    # a request asking for at most 100 tokens cannot answer more; same max_tokens
    # bucket is unknown (<= 256), so the class + prompt key answers
    pred = m.predict("interactive", 500, 100)
    assert pred is not None and pred.level == 2
    assert pred.grid.max() <= 100 and pred.quantile(0.99) == 100
    assert pred.mean < m.predict("interactive", 500, 4096).mean  # type: ignore[union-attr]


def test_falls_back_to_coarser_keys_then_none() -> None:
    m = OutputLengthModel(min_samples=30)
    assert m.predict("interactive", 10, 64) is None  # nothing learned: caller keeps max_tokens
    for y in _lengths(40, seed=2):
        m.observe("batch", 3000, 4096, float(y))
    pred = m.predict("interactive", 10, 64)  # another class: only the all-requests key
    assert pred is not None and pred.level == 0
    assert m.predict("batch", 3000, 512).level == 2  # type: ignore[union-attr]


def test_merge_of_parts_equals_the_whole_and_state_round_trips() -> None:
    y = _lengths(3_000, seed=3)
    whole = _trained(y)
    a, b = _trained(y[:1000]), _trained(y[1000:])
    merged = a.merge(b)
    whole.flush()  # merging folds the buffered completions in; compare like with like
    pw, pm = whole.predict("interactive", 500, 4096), merged.predict("interactive", 500, 4096)
    assert pw is not None and pm is not None
    np.testing.assert_allclose(pm.grid, pw.grid)
    again = OutputLengthModel.from_dict(merged.to_dict())
    np.testing.assert_allclose(again.predict("interactive", 500, 4096).grid, pw.grid)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("output", "match"),
    [
        (math.nan, "finite"),
        (math.inf, "finite"),
        (0.0, ">= 1"),
        (-3.0, ">= 1"),
        (5000.0, "max_tokens"),
    ],
)
def test_bad_lengths_are_refused_and_change_nothing(output: float, match: str) -> None:
    m = _trained(_lengths(50, seed=4))
    before = m.to_dict()
    with pytest.raises(ValueError, match=match):
        m.observe("interactive", 500, 4096, output)
    assert m.to_dict() == before


def test_bad_prompt_and_max_tokens_are_refused() -> None:
    m = OutputLengthModel()
    with pytest.raises(ValueError, match="prompt_tokens"):
        m.observe("c", -1, 10, 5.0)
    with pytest.raises(ValueError, match="max_tokens"):
        m.observe("c", 1, 0, 5.0)
    with pytest.raises(ValueError, match="max_tokens"):
        m.predict("c", 1, 0)
