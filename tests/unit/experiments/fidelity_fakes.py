"""Fakes for the ``cascade bench fidelity`` tests: request sets, the result file
``vllm bench serve --save-detailed`` writes for them, and "real" latencies that
are the simulator's own (sim vs sim: any error is the method's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments.benchmarks.fidelity_replay import Replay, simulate_replay
from experiments.benchmarks.fidelity_report import LatencySamples


def requests(n: int, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson send times from 0 (s), prompt lengths 20-399, outputs 2-128 tokens."""
    g = np.random.default_rng(seed)
    arrivals = np.cumsum(g.exponential(1 / rate, n))
    arrivals -= arrivals[0]
    return arrivals, g.integers(20, 400, n), g.integers(2, 129, n)


def result(arr: np.ndarray, prompts: np.ndarray, outs: np.ndarray,
           ttft: np.ndarray, e2e: np.ndarray) -> dict[str, Any]:  # fmt: skip
    """A ``vllm bench serve --save-detailed`` result of these requests (send times
    on a perf_counter that did not start at 0)."""
    n = len(arr)
    return {
        "start_times": (arr + 4096.0).tolist(), "input_lens": prompts.tolist(),
        "output_lens": outs.tolist(), "ttfts": ttft.tolist(), "latencies": e2e.tolist(),
        "itls": [[] for _ in range(n)], "errors": [""] * n, "completed": n, "failed": 0,
    }  # fmt: skip


def simulated(setup: Any, cfg: Any, arr: np.ndarray, prompts: np.ndarray,
              outs: np.ndarray, overhead: float = 0.0) -> LatencySamples:  # fmt: skip
    """The simulator's latencies for these requests (``overhead`` s added to TTFT/E2E)."""
    nan = np.full(len(arr), np.nan)
    rep = Replay(arr, prompts, outs, LatencySamples.from_times(nan, nan, outs), 0, "test")
    return simulate_replay(setup, rep, cfg, seed=0, overhead_s=overhead)


def write_real(path: Path, setup: Any, cfg: Any, arr: np.ndarray, prompts: np.ndarray,
               outs: np.ndarray, overhead: float = 0.0) -> Replay:  # fmt: skip
    """Simulate these requests on ``setup`` and save them as a "real" result file;
    returns the file's ``Replay``."""
    from experiments.benchmarks.fidelity_replay import replay_from_result

    s = simulated(setup, cfg, arr, prompts, outs, overhead)
    data = result(arr, prompts, outs, s.ttft, s.e2e)
    path.write_text(json.dumps(data))
    return replay_from_result(data, str(path))
