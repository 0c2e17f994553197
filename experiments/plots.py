"""PNG plots of simulation results: latency CDFs and P99 over time, per policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.metrics import window_p99


def latency_cdf_figure(series: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Any:
    """A matplotlib figure of TTFT and E2E CDFs (log x), one line per name;
    ``series`` maps a name (policy, system) to its (TTFT s, E2E s) samples.
    The caller saves and closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, samples in series.items():
        for ax, lat in zip(axes, samples, strict=True):
            x = np.sort(lat)
            ax.plot(x, np.arange(1, x.size + 1) / max(x.size, 1), label=name)
    for ax, label in zip(axes, ("TTFT (s)", "E2E latency (s)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("CDF")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def write_plots(results: Sequence[Any], out_dir: Path, *, window_s: float = 60.0) -> list[Path]:
    """Write ``latency_cdf.png`` (TTFT and E2E CDFs) and ``p99_over_time.png``
    (E2E P99 per window) for ``results`` (``SimResult``s); returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    series = {}
    for res in results:
        log = res.log
        done = np.isfinite(log.finish_s)
        series[res.policy] = (
            (log.first_token_s - log.arrival_s)[done],
            (log.finish_s - log.arrival_s)[done],
        )
    fig = latency_cdf_figure(series)
    cdf = out_dir / "latency_cdf.png"
    fig.savefig(cdf, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    for res in results:
        starts, tail = window_p99(res.log, window_s)
        ax.plot(starts, tail, marker=".", label=res.policy)
    ax.set_xlabel(f"arrival time (s), {window_s:g} s windows")
    ax.set_ylabel("E2E P99 (s)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    p99 = out_dir / "p99_over_time.png"
    fig.savefig(p99, dpi=120)
    plt.close(fig)
    return [cdf, p99]
