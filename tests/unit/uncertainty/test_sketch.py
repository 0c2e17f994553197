"""Quantile sketch: relative error ≤ α on skewed and bimodal data; exact merge."""

import numpy as np
import pytest

from uncertainty import QuantileSketch

QS = np.array([0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999])


def _datasets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2024)
    n = 200_000
    return {
        "lognormal": rng.lognormal(mean=-3.0, sigma=1.2, size=n),
        "pareto": (rng.pareto(1.5, size=n) + 1.0) * 1e-3,
        "bimodal": np.concatenate(
            [rng.normal(0.02, 0.002, n // 2).clip(1e-6), rng.normal(0.5, 0.05, n // 2).clip(1e-6)]
        ),
    }


@pytest.mark.parametrize("alpha", [0.01, 0.02])
@pytest.mark.parametrize("name", ["lognormal", "pareto", "bimodal"])
def test_every_quantile_within_alpha(name: str, alpha: float) -> None:
    x = _datasets()[name]
    sk = QuantileSketch(alpha)
    for chunk in np.array_split(x, 200):  # batches, as the replicas feed it
        sk.update(chunk)
    exact = np.quantile(x, QS, method="lower")  # x_(floor(q(n-1))), DDSketch's rank
    got = sk.quantiles(QS)
    rel = np.abs(got - exact) / exact
    assert rel.max() <= alpha + 1e-12, dict(zip(QS.tolist(), rel.tolist(), strict=True))
    assert sk.n == x.size


def test_merge_equals_sketch_of_whole() -> None:
    x = _datasets()["lognormal"]
    parts = np.array_split(x, 7)
    merged = QuantileSketch()
    for p in parts:
        merged.merge(QuantileSketch().update(p))
    whole = QuantileSketch().update(x)
    np.testing.assert_array_equal(merged.quantiles(QS), whole.quantiles(QS))
    assert merged.n == whole.n


def test_memory_bounded_and_collapse_keeps_upper_quantiles() -> None:
    sk = QuantileSketch(0.01, max_bins=256)
    x = np.geomspace(1e-9, 1e9, 100_000)  # range far wider than 256 buckets
    sk.update(x)
    assert sk.nbytes <= 256 * 8 + 128
    assert abs(sk.quantile(0.99) - np.quantile(x, 0.99, method="lower")) / sk.quantile(0.99) <= 0.01
    default = QuantileSketch().update(x)
    assert default.nbytes <= 32 * 1024


def test_zeros_and_extremes() -> None:
    sk = QuantileSketch().update([0.0, 0.0, 1.0, 2.0])
    assert sk.quantile(0.0) == 0.0
    assert sk.quantile(1.0) == 2.0  # clamped to the exact max


@pytest.mark.parametrize("bad", [[float("nan")], [-1.0], [], [1.0, float("inf")]])
def test_bad_input_changes_nothing(bad: list[float]) -> None:
    sk = QuantileSketch().update([1.0, 2.0])
    before = sk.to_dict()
    with pytest.raises(ValueError):
        sk.update(bad)
    assert sk.to_dict() == before


def test_merge_requires_same_alpha_and_quantile_range_checked() -> None:
    with pytest.raises(ValueError, match="alpha"):
        QuantileSketch(0.01).merge(QuantileSketch(0.02).update([1.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        QuantileSketch().update([1.0]).quantile(1.5)
    assert np.isnan(QuantileSketch().quantile(0.5))
