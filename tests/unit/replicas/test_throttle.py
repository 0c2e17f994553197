"""Throttle: at most one ``due()`` per period of the injected clock."""

from __future__ import annotations

import pytest

from replicas.throttle import Throttle


def test_due_once_per_period() -> None:
    t = [0.0]
    th = Throttle(1.0, clock=lambda: t[0])
    seen = []
    for step in range(12):  # a 4 Hz loop for 3 s
        t[0] = step * 0.25
        seen.append(th.due())
    assert [i * 0.25 for i, d in enumerate(seen) if d] == [0.0, 1.0, 2.0]


def test_zero_period_always_due_and_bad_period_refused() -> None:
    th = Throttle(0.0, clock=lambda: 5.0)
    assert th.due() and th.due()
    with pytest.raises(ValueError, match="period_s"):
        Throttle(float("nan"))
