"""A rate limit for periodic side work (metric exports) that runs inside faster loops.

Why: the replicas' push loop and the controller's step run every 250 ms, but
Ray's metrics agent reports every few seconds and Prometheus scrapes every
10–15 s, so exporting at 4 Hz cost CPU (each ``Gauge.set`` is a call into Ray's
C++ metrics library, dozens per export) for values nobody reads. On a 2-core
host that CPU comes out of the engines (docs/benchmarks.md, "Serving path").
"""

from __future__ import annotations

import time
from collections.abc import Callable

METRICS_PERIOD_S = 1.0  # export metrics at most once a second


class Throttle:
    """``due()`` is True at most once per ``period_s`` seconds of ``clock``
    (the first call is due). ``period_s`` must be >= 0 (0: always due)."""

    def __init__(
        self, period_s: float = METRICS_PERIOD_S, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not period_s >= 0:
            raise ValueError(f"period_s must be >= 0, got {period_s!r}")
        self.period_s = period_s
        self._clock = clock
        self._last = -float("inf")

    def due(self) -> bool:
        now = self._clock()
        if now - self._last < self.period_s:
            return False
        self._last = now
        return True
