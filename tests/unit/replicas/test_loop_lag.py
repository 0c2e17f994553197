"""Event-loop lateness (replicas.loop_lag): booked, bounded, logged when late."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from replicas.loop_lag import LoopLag


def test_lateness_is_what_the_sleep_overran() -> None:
    lag = LoopLag("t", warn_s=0.25)
    assert lag.record(0.1, 0.1) == 0.0
    assert lag.record(0.1, 0.05) == 0.0  # an early wake-up is not negative lateness
    assert lag.record(0.1, 0.3) == pytest.approx(0.2)
    assert (lag.wakeups, lag.late) == (3, 0) and lag.max_s == pytest.approx(0.2)


def test_a_blocked_loop_is_caught_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    lag = LoopLag("ingress", warn_s=0.1)

    async def main() -> float:
        task = asyncio.ensure_future(lag.sleep(0.01))
        await asyncio.sleep(0)  # the sleep has started
        time.sleep(0.3)  # something holds the loop's thread (a long callback, GC, ...)
        return await task

    with caplog.at_level(logging.WARNING, logger="cascade.loop"):
        late = asyncio.run(main())
    assert 0.25 < late < 1.0 and lag.late == 1
    assert any("ingress: event loop woke" in r.message for r in caplog.records)


def test_a_free_loop_is_not_late() -> None:
    lag = LoopLag("t", warn_s=0.1)
    asyncio.run(lag.sleep(0.01))
    assert lag.late == 0 and lag.max_s < 0.1
    with pytest.raises(ValueError, match="warn_s"):
        LoopLag("t", warn_s=-1.0)
