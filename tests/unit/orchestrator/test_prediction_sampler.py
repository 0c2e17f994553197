"""PredictionSampler: about ``per_s`` a second under load, every request when quiet,
and a sample that does not depend on the requests (seeded; tolerances stated)."""

from __future__ import annotations

import random

import pytest

from orchestrator.prediction_sampler import PredictionSampler


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _run(sampler: PredictionSampler, clock: _Clock, rate: float, seconds: float) -> list[bool]:
    out = []
    for _ in range(int(rate * seconds)):
        clock.t += 1.0 / rate
        out.append(sampler.take())
    return out


def test_under_load_about_per_s_are_taken() -> None:
    clock = _Clock()
    sampler = PredictionSampler(4.0, clock=clock, rng=random.Random(0))
    taken = _run(sampler, clock, rate=100.0, seconds=200.0)
    per_s = sum(taken[100:]) / 199.0  # after the first window
    # binomial: mean 4/s, sd of the 199-s mean ~0.14/s; +-0.6 is > 4 sd
    assert per_s == pytest.approx(4.0, abs=0.6)


def test_quiet_traffic_is_all_taken() -> None:
    clock = _Clock()
    sampler = PredictionSampler(4.0, clock=clock, rng=random.Random(0))
    assert all(_run(sampler, clock, rate=3.0, seconds=30.0))
    assert sampler.taken == sampler.seen == 90


def test_the_sample_is_uniform_over_requests() -> None:
    # requests alternate "short" and "long"; a sample that followed the request
    # (e.g. every k-th with k even) would take one kind only
    clock = _Clock()
    sampler = PredictionSampler(5.0, clock=clock, rng=random.Random(1))
    taken = _run(sampler, clock, rate=50.0, seconds=400.0)[50:]
    even = sum(t for i, t in enumerate(taken) if i % 2 == 0)
    odd = sum(t for i, t in enumerate(taken) if i % 2 == 1)
    # ~1000 each, sd ~30, so the difference has sd ~42: within 15 % (~150, > 3.5 sd)
    assert abs(even - odd) < 0.15 * (even + odd) / 2


def test_rate_change_is_followed_within_a_window() -> None:
    clock = _Clock()
    sampler = PredictionSampler(2.0, clock=clock, rng=random.Random(2))
    _run(sampler, clock, rate=200.0, seconds=5.0)
    assert sampler.probability == pytest.approx(0.01, rel=0.05)
    _run(sampler, clock, rate=1.0, seconds=3.0)
    assert sampler.probability == 1.0


@pytest.mark.parametrize("kwargs", [{"per_s": 0.0}, {"per_s": -1.0}, {"per_s": 1.0, "window_s": 0}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        PredictionSampler(clock=_Clock(), **kwargs)  # type: ignore[arg-type]
