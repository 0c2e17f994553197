"""Cross-pool split: draw the pool from the plan's weights (the gateway ranks inside it)."""

from __future__ import annotations

import numpy as np
import pytest

from policies import PoolSplitter

PLAN = {"interactive": {"h100": 0.8, "a100": 0.2}, "batch": {"a100": 1.0}}


def _shares(draw, n: int = 4000) -> dict[str, float]:  # type: ignore[no-untyped-def]
    picks = [draw() for _ in range(n)]
    return {p: picks.count(p) / n for p in set(picks)}


def test_weights_per_class_are_followed() -> None:
    rng = np.random.default_rng(0)
    s = PoolSplitter()
    shares = _shares(lambda: s.choose_pool("interactive", PLAN, rng))
    assert abs(shares["h100"] - 0.8) < 0.03
    assert _shares(lambda: s.choose_pool("batch", PLAN, rng)) == {"a100": 1.0}
    # a class's own mapping works too
    assert s.choose_pool("x", {"a100": 1.0, "h100": 0.0}, rng) == "a100"


def test_fallback_is_proportional_to_available() -> None:
    rng = np.random.default_rng(1)
    s = PoolSplitter()
    avail = {"h100": 3.0, "a100": 1.0}
    shares = _shares(lambda: s.choose_pool("unknown", PLAN, rng, available=avail))
    assert abs(shares["h100"] - 0.75) < 0.03
    # weights only on a pool that has nothing available → fallback too
    assert s.choose_pool("batch", PLAN, rng, available={"h100": 2.0, "a100": 0.0}) == "h100"


def test_errors() -> None:
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="no pool"):
        PoolSplitter().choose_pool("x", None, rng)
    with pytest.raises(ValueError, match="finite and >= 0"):
        PoolSplitter().choose_pool("x", {"h100": -1.0}, rng)
