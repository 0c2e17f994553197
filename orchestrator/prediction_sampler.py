"""``PredictionSampler``: which requests the ingress scores its predictions on.

Scoring a request's prediction (ranking its pool again from the state taken at
its decision, the quantiles, the conformal update: ~1.3 ms of Python each,
measured with py-spy at 14 req/s) is the largest per-request cost Cascade adds
to the ingress, and on a host whose CPUs the engines use it slows the engines
(docs/benchmarks.md, issue 12). Coverage is a share, so a uniform random sample
of requests estimates it without bias; a few per second is plenty (the 1 %
level needs ~thousands of samples for ±0.5 %: an hour at 4 per second).

Each request is taken with probability ``min(1, per_s / rate)``, independently
of everything about it (so the sample is uniform: the outcome cannot bias it),
``rate`` being the requests per second counted over the previous window
(``window_s``, 1 s). Below ``per_s`` requests per second every request is taken.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["PredictionSampler"]


class PredictionSampler:
    """``take()`` once per request: True if its prediction is to be scored.

    ``per_s``: predictions per second wanted on average (> 0; ``inf``: all);
    ``clock``: seconds, monotonic; ``rng``: the random draws (seeded in tests).
    Raises ``ValueError`` for ``per_s <= 0`` or ``window_s <= 0``.
    """

    def __init__(
        self,
        per_s: float,
        *,
        clock: Callable[[], float],
        rng: random.Random | None = None,
        window_s: float = 1.0,
    ) -> None:
        if not per_s > 0:
            raise ValueError(f"per_s must be > 0, got {per_s}")
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.per_s = per_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._window_s = window_s
        self._start = clock()
        self._count = 0
        self.probability = 1.0  # of the current window; every request until one is counted
        self.taken = 0
        self.seen = 0

    def take(self) -> bool:
        now = self._clock()
        elapsed = now - self._start
        if elapsed >= self._window_s:
            rate = self._count / elapsed
            self.probability = min(1.0, self.per_s / rate) if rate > 0 else 1.0
            self._start, self._count = now, 0
        self._count += 1
        self.seen += 1
        taken = self.probability >= 1.0 or self._rng.random() < self.probability
        self.taken += taken
        return taken
