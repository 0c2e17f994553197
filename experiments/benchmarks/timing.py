"""Small timing helpers shared by the benchmarks (wall clock, one core)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def pin_to_one_core() -> int | None:
    """Pin this process to one CPU so figures are "on one core"; returns the CPU
    or None where affinity is not supported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[-1]
    os.sched_setaffinity(0, {cpu})
    return cpu


def best_rate(
    fn: Callable[[], object], items_per_call: int, *, seconds: float = 0.5, rounds: int = 5
) -> float:
    """Items per second of ``fn``: the best of ``rounds`` timed loops of about
    ``seconds`` each (best-of, because these machines are shared and noisy)."""
    fn()  # warm up caches and lazy allocations
    calls = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        dt = time.perf_counter() - t0
        if dt >= seconds / 4 or calls > 1 << 24:
            break
        calls *= 2
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        dt = time.perf_counter() - t0
        best = max(best, calls * items_per_call / dt)
    return best
