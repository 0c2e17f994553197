"""PNG plots of ``cascade evaluate``: every figure across loads, one line per policy.

Input is the list of results.jsonl rows (``load``, ``policy`` and the metrics of
``experiments.metrics``; null = did not happen, drawn as a gap). Cascade is drawn
thick and black so it stands out from the baselines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.evaluation import CASCADE

Row = Mapping[str, Any]


def _series(rows: Sequence[Row], key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """policy → (loads, values of ``key``), in order of load; None becomes NaN."""
    out: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        v = r.get(key)
        out.setdefault(str(r["policy"]), []).append(
            (float(r["load"]), float("nan") if v is None else float(v))
        )
    return {
        p: (np.array([x for x, _ in sorted(pts)]), np.array([y for _, y in sorted(pts)]))
        for p, pts in out.items()
    }


def _style(policy: str, colors: dict[str, Any]) -> dict[str, Any]:
    if policy == CASCADE:
        return {"color": "black", "linewidth": 2.6, "zorder": 5}
    return {"color": colors[policy], "linewidth": 1.4}


def _colors(rows: Sequence[Row]) -> dict[str, Any]:
    import matplotlib

    policies = [p for p in dict.fromkeys(str(r["policy"]) for r in rows) if p != CASCADE]
    cmap = matplotlib.colormaps["tab10"]
    return {p: cmap(i % 10) for i, p in enumerate(policies)}


def _plain_log(ax: Any) -> None:
    """Log y with plain labels at 1, 2, 5 × 10ᵏ (0.2, 0.5, 1, 2), not 2×10⁻¹."""
    import math

    from matplotlib.ticker import FuncFormatter

    def label(y: float, _: Any) -> str:
        if y <= 0:
            return ""
        lead = round(y / 10 ** math.floor(math.log10(y) + 1e-9))
        return f"{y:g}" if lead in (1, 2, 5) else ""

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(label))
    ax.yaxis.set_minor_formatter(FuncFormatter(label))


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_eval_plots(rows: Sequence[Row], out_dir: Path) -> list[Path]:
    """Write ``latency_vs_load.png``, ``slo_goodput_vs_load.png`` and
    ``util_vs_variance.png`` into ``out_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    colors = _colors(rows)
    paths = []

    # 1. latency quantiles vs load: P99 solid, P50 dashed, one panel per metric
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, (metric, label) in zip(
        axes, (("ttft", "TTFT (s)"), ("tpot", "TPOT (s)"), ("e2e", "E2E (s)")), strict=True
    ):
        p99, p50 = _series(rows, f"{metric}_p99_s"), _series(rows, f"{metric}_p50_s")
        for policy, (x, y) in p99.items():
            st = _style(policy, colors)
            ax.plot(x, y, marker="o", label=f"{policy}", **st)
            ax.plot(*p50[policy], linestyle="--", alpha=0.6, **st)
        _plain_log(ax)
        ax.set_xlabel("load (fraction of capacity)")
        ax.set_ylabel(label)
        ax.set_title(f"{label.split()[0]}: P99 solid, P50 dashed")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "latency_vs_load.png"))

    # 2. what the user gets: SLO attainment, goodput, tail predictability, waste
    panels = (
        ("slo_attainment", "SLO attainment (share of all requests)"),
        ("goodput_common_per_gpu_s", "goodput (requests in SLO per GPU·s)"),
        ("p99_window_cv", "tail predictability σ(P99)/mean(P99)\n(lower = steadier)"),
        ("wasted_output_frac", "wasted output tokens (missed SLO)"),
    )
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        for policy, (x, y) in _series(rows, key).items():
            ax.plot(x, y, marker="o", label=policy, **_style(policy, colors))
        ax.set_xlabel("load (fraction of capacity)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "slo_goodput_vs_load.png"))

    # 3. the trade-off: utilization bought vs variance paid, a curve over loads;
    # busy time saturates early under continuous batching (any batch is "busy"),
    # so the work served per GPU is drawn beside it
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    var = _series(rows, "e2e_per_token_var_s2")
    for ax, (key, label) in zip(
        axes,
        (("gpu_util_arrivals", "GPU utilization (busy fraction while requests arrive)"),
         ("tokens_common_per_gpu_s", "output tokens served per GPU·s")),
        strict=True,
    ):  # fmt: skip
        for policy, (loads, x) in _series(rows, key).items():
            v = var[policy][1] * 1e6  # s² → ms² per token²
            ax.plot(x, v, marker="o", label=policy, **_style(policy, colors))
            if policy == CASCADE:
                for xi, yi, load in zip(x, v, loads, strict=True):
                    ax.annotate(f"load {load:g}", (xi, yi), textcoords="offset points",
                                xytext=(6, -12))  # fmt: skip
        _plain_log(ax)
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("σ² of E2E per output token (ms²)")
    axes[0].legend(fontsize=8)
    fig.suptitle("utilization vs latency variance across loads (lower right is better)")
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "util_vs_variance.png"))
    return paths
