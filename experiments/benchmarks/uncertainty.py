"""Throughput and memory of the uncertainty estimators (issue 2 bars).

Bars on one core: >= 5 M moment updates/s and >= 1 M sketch updates/s in batches
of 1,024; a summary merge <= 50 µs; a sketch <= 32 KiB. ``ddsketch_lib_updates_per_s``
is the ``ddsketch`` package measured side by side: why we ship our own sketch.
"""

from __future__ import annotations

import argparse
import tracemalloc
from typing import Any

import numpy as np

from experiments.benchmarks.timing import best_rate, pin_to_one_core
from uncertainty import DecayedWelford, Hierarchy, Moments, QuantileSketch, Summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=1024, help="samples per update call")
    parser.add_argument("--seconds", type=float, default=0.4, help="timed loop length")


def _alloc_bytes(make: Any, count: int = 200) -> float:
    """Average bytes allocated per object that ``make`` builds (tracemalloc)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    keep = [make() for _ in range(count)]
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del keep
    return used / count


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    cpu = pin_to_one_core()
    rng = np.random.default_rng(0)
    b = int(args.batch)
    if b < 1:
        raise ValueError(f"--batch must be >= 1, got {b}")
    x = rng.lognormal(np.log(0.02), 0.5, size=b)  # ITL-like seconds
    s = float(args.seconds)

    m = Moments()
    moments_rate = best_rate(lambda: m.update(x), b, seconds=s)
    sk = QuantileSketch()
    sketch_rate = best_rate(lambda: sk.update(x), b, seconds=s)
    sm = Summary()
    summary_rate = best_rate(lambda: sm.update(x), b, seconds=s)
    dw = DecayedWelford(halflife_samples=2048)
    decayed_rate = best_rate(lambda: dw.update(x), b, seconds=s)

    lib_rate = float("nan")
    try:
        from ddsketch import DDSketch

        lib = DDSketch(relative_accuracy=0.01)
        xs = x.tolist()

        def _lib_add() -> None:
            for v in xs:
                lib.add(v)

        lib_rate = best_rate(_lib_add, b, seconds=s, rounds=3)
    except ImportError:  # the comparison is informative only
        pass

    # merge: one replica-sized summary (a realistic ITL distribution) into another
    big = rng.lognormal(np.log(0.02), 0.8, size=200_000)
    child = Summary().update(big)
    parent = Summary().update(big[:1000])
    merge_rate = best_rate(lambda: parent.merge(child), 1, seconds=s)

    # hierarchy: 2 pools x 16 replicas; one replica's snapshot replaced, then the
    # cluster summary re-read (one merge per level plus the pool's fan-in)
    h = Hierarchy()
    reps = [Summary().update(rng.lognormal(np.log(0.02), 0.5, size=5000)) for _ in range(32)]
    for i, r in enumerate(reps):
        h.put((f"pool{i % 2}", f"r{i}"), r)

    def _refresh() -> None:
        h.put(("pool0", "r0"), reps[0])
        h.summary()

    refresh_rate = best_rate(_refresh, 1, seconds=s)

    filled = lambda: QuantileSketch().update(big)  # noqa: E731
    return [
        {
            "benchmark": "uncertainty",
            "cpu": cpu,
            "batch": b,
            "moments_updates_per_s": round(moments_rate),
            "sketch_updates_per_s": round(sketch_rate),
            "summary_updates_per_s": round(summary_rate),
            "decayed_updates_per_s": round(decayed_rate),
            "ddsketch_lib_updates_per_s": None if np.isnan(lib_rate) else round(lib_rate),
            "hierarchy_merge_us": round(1e6 / merge_rate, 2),
            "hierarchy_refresh_32_replicas_us": round(1e6 / refresh_rate, 2),
            "moments_bytes": round(_alloc_bytes(lambda: Moments().update(x[:4]))),
            "sketch_bytes": round(_alloc_bytes(filled, count=20)),
            "sketch_nbytes_reported": QuantileSketch().update(big).nbytes,
        }
    ]
