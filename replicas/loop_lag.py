"""How late a serving process's event loop wakes: a stall detector at no extra cost.

Every periodic loop Cascade runs in a serving process (the ingress's refresh,
the request router's refresh on Serve's router loop, a replica's snapshot push)
already sleeps between rounds. ``LoopLag.sleep`` is that sleep, timed: the
lateness of the wake-up beyond the asked delay is how long the loop could not
run anything — no chunk forwarded, no request routed — because something held
the thread (a long callback, the GIL, a garbage collection, the host's CPUs).
Wake-ups later than ``warn_s`` are logged with the process's role, so a stall
a client saw (every waiting request released at one instant) can be matched
to the process that stalled, or to all of them (the host).

Contract: ``sleep(delay)`` sleeps like ``asyncio.sleep`` and records the
lateness (s, ≥ 0); ``late``: wake-ups later than ``warn_s``; ``max_s``: the
latest. The clock is injected (``time.monotonic`` by default).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

__all__ = ["LoopLag"]

logger = logging.getLogger("cascade.loop")


class LoopLag:
    """See the module docstring. Raises ``ValueError`` for ``warn_s`` <= 0."""

    def __init__(
        self, name: str, *, warn_s: float = 0.25, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not warn_s > 0:
            raise ValueError(f"LoopLag: warn_s must be > 0 s, got {warn_s}")
        self.name = name
        self.warn_s = warn_s
        self._clock = clock
        self.late = 0
        self.max_s = 0.0
        self.wakeups = 0

    def record(self, asked_s: float, slept_s: float) -> float:
        """Book one wake-up after asking for ``asked_s`` and sleeping ``slept_s``;
        returns the lateness (s)."""
        lag = max(0.0, slept_s - asked_s)
        self.wakeups += 1
        self.max_s = max(self.max_s, lag)
        if lag > self.warn_s:
            self.late += 1
            logger.warning("%s: event loop woke %.3f s late (asked %.3f s)", self.name, lag,
                           asked_s)  # fmt: skip
        return lag

    async def sleep(self, delay_s: float) -> float:
        """``asyncio.sleep(delay_s)``, timed; returns the lateness (s)."""
        t0 = self._clock()
        await asyncio.sleep(delay_s)
        return self.record(delay_s, self._clock() - t0)
