"""Simulator speed: the Azure conv hour on 16 replicas, and a scale run.

Bars (issue 3): the full Azure conv hour (19,366 requests) on 16 replicas in
<= 30 s wall on one core; a scale run with >= 256 replicas and >= 200,000
requests within 2 GiB peak memory. Rows (one JSON object each):

* ``azure-hour``: the trace unscaled (5.5 req/s) on the built-in 16-replica cluster;
* ``azure-load``: the same requests time-scaled to ``--load`` of measured capacity;
* ``scale-R-N``: R replicas, N synthetic Poisson requests at ``--load`` (with
  ``--scale``; also smaller grid points with ``--grid``, for growth curves).

Each row reports ``wall_s``, ``cpu_s`` (process CPU time: the figure to read on a
shared machine), ``events``, ``events_per_s`` and ``peak_rss_mib``
(the process's peak resident memory so far; rows run in order, so a row's peak
includes earlier ones: run a scale row alone for its own figure).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from typing import Any

import numpy as np

from experiments.benchmarks.timing import pin_to_one_core


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default="least-outstanding")
    parser.add_argument("--load", type=float, default=0.8, help="for the scaled rows")
    parser.add_argument("--scale", action="store_true", help="add the 256-replica run")
    parser.add_argument("--scale-replicas", type=int, default=256)
    parser.add_argument("--scale-requests", type=int, default=200_000)
    parser.add_argument("--grid", action="store_true", help="growth grid (replicas × requests)")
    parser.add_argument("--only", default=None, help="run only rows whose name starts with this")


def _peak_rss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0 if sys.platform != "darwin" else kib / 2**20


def _row(name: str, setup: Any, trace: Any, policy: str) -> dict[str, Any]:
    from experiments.simulator import simulate

    c0 = time.process_time()
    res = simulate(setup, trace, policy)
    cpu_s = time.process_time() - c0
    m = res.metrics
    keep = ("requests", "completed", "wall_s", "events", "events_per_s", "e2e_p99_s",
            "ttft_p99_s", "gpu_util", "preemptions")  # fmt: skip
    return {
        "bench": "sim", "row": name, "replicas": setup.replicas, "policy": policy,
        **{k: m[k] for k in keep}, "cpu_s": cpu_s, "peak_rss_mib": _peak_rss_mib(),
    }  # fmt: skip


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from experiments.sim_config import default_setup
    from experiments.simulator import measure_capacity
    from orchestrator.traces import load_trace, poisson

    cpu = pin_to_one_core()
    rows: list[dict[str, Any]] = []
    setup = default_setup()
    azure = load_trace("azure-conv")

    def want(name: str) -> bool:
        return args.only is None or name.startswith(args.only)

    if want("azure-hour"):
        rows.append(_row("azure-hour", setup, azure, args.policy))
    if want("azure-load"):
        cap = measure_capacity(setup, azure)
        rows.append(_row("azure-load", setup, azure.scaled_to_rate(args.load * cap), args.policy))
    grid: list[tuple[int, int]] = []
    if args.grid:
        grid += [(16, 20_000), (64, 50_000), (128, 100_000)]
    if args.scale:
        grid.append((args.scale_replicas, args.scale_requests))
    for replicas, n in grid:
        name = f"scale-{replicas}-{n}"
        if not want(name):
            continue
        big = setup.with_replicas(max(1, replicas // len(setup.pools)))
        trace = poisson(n, 1.0, np.random.default_rng(0))
        cap = measure_capacity(big, trace)
        rows.append(_row(name, big, trace.scaled_to_rate(args.load * cap), args.policy))
    for r in rows:
        r["cpu"] = cpu
    return rows
