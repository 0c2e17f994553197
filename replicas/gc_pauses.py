"""Garbage-collector pauses of a serving process, measured where they happen.

A collection of CPython's oldest generation walks every tracked object of the
process while holding the GIL: in a process that holds many objects (an
ingress with sketches and calibration logs, a replica with per-token
timestamps) it can stop the event loop that streams every response for
hundreds of milliseconds, which a client sees as a stall in which nobody gets a
token. ``GcPauseWatch`` times each collection through ``gc.callbacks`` (two
clock reads per collection) and logs the ones longer than ``warn_s`` with their
generation and what they collected, so a stall can be matched to a pause, or
ruled out.

Contract: ``install()`` once per process (a second call is a no-op);
``stats()`` returns counts and the longest pause (seconds) per generation.
The clock is injected (``time.perf_counter`` by default).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["GcPauseWatch"]

logger = logging.getLogger("cascade.gc")


class GcPauseWatch:
    """Times every collection of this process (see the module docstring)."""

    def __init__(
        self, name: str, *, warn_s: float = 0.1, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        if not warn_s > 0:
            raise ValueError(f"GcPauseWatch: warn_s must be > 0 s, got {warn_s}")
        self.name = name
        self.warn_s = warn_s
        self._clock = clock
        self._t0 = 0.0
        self._cpu0 = 0.0
        self.count = [0, 0, 0]
        self.total_s = [0.0, 0.0, 0.0]
        self.max_s = [0.0, 0.0, 0.0]
        self.slow = 0  # collections longer than warn_s
        self._installed = False

    def install(self) -> GcPauseWatch:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True
        return self

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = self._clock()
            self._cpu0 = time.thread_time()
            return
        dt = self._clock() - self._t0
        cpu = time.thread_time() - self._cpu0
        gen = min(int(info.get("generation", 0)), 2)
        self.count[gen] += 1
        self.total_s[gen] += dt
        self.max_s[gen] = max(self.max_s[gen], dt)
        if dt > self.warn_s:
            self.slow += 1
            logger.warning(
                "%s: gc generation %d paused the process %.3f s (%.3f s of CPU; collected %s, "
                "uncollectable %s, %d tracked objects)", self.name, gen, dt, cpu,
                info.get("collected"), info.get("uncollectable"), len(gc.get_objects(gen)),
            )  # fmt: skip

    def stats(self) -> dict[str, Any]:
        """Collections per generation, their total and longest pause (s), and how
        many took longer than ``warn_s``."""
        return {
            "count": list(self.count),
            "total_s": [round(t, 6) for t in self.total_s],
            "max_s": [round(t, 6) for t in self.max_s],
            "slow": self.slow,
        }
