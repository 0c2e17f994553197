"""``cascade load``: replay a trace through Cascade's OpenAI HTTP API.

Requests are sent at the trace's (time-scaled) arrival times, streaming, with a
progress bar (``orchestrator.loadgen``); the result is a latency table (TTFT,
TPOT, E2E quantiles, P99 stability over windows, SLO attainment, tokens/s), or
one JSON object with ``--json``, and PNG plots with ``--plot DIR``. The trace is a
path or a short name (``orchestrator.traces``). Talks only to ``--url``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any


def add_load_arguments(load: argparse.ArgumentParser) -> None:
    load.add_argument("--trace", required=True, help="path or short name (azure-conv, ...)")
    load.add_argument("--url", default="http://127.0.0.1:8000/v1")
    load.add_argument("--model", default=None, help="model id (default: the server's first)")
    load.add_argument("--duration", type=float, default=60.0, help="seconds of trace to replay")
    load.add_argument("--rate", type=float, default=None, help="time-scale arrivals to req/s")
    load.add_argument("--prompt-scale", type=float, default=1.0)
    load.add_argument("--output-scale", type=float, default=1.0)
    load.add_argument("--max-requests", type=int, default=2000)
    load.add_argument("--json", action="store_true", help="print one JSON object")
    load.add_argument("--plot", default=None, metavar="DIR", help="write PNG plots to DIR")


def run_load(args: argparse.Namespace) -> int:
    import urllib.request

    import numpy as np
    from rich.console import Console
    from rich.progress import Progress

    from orchestrator.loadgen import replay, report
    from orchestrator.traces import load_trace

    if not (args.duration > 0):
        raise ValueError(f"--duration must be > 0, got {args.duration}")
    base = args.url.rstrip("/")
    model = args.model
    if model is None:
        with urllib.request.urlopen(f"{base}/models", timeout=30) as r:
            model = json.loads(r.read())["data"][0]["id"]
    trace = load_trace(args.trace, rng=np.random.default_rng(0))
    if args.rate is not None:
        trace = trace.scaled_to_rate(args.rate)
    trace = trace.head(args.max_requests, duration_s=args.duration)
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task(f"replaying {len(trace)} requests", total=len(trace))
        records = asyncio.run(
            replay(
                trace,
                base,
                model,
                prompt_scale=args.prompt_scale,
                output_scale=args.output_scale,
                progress=lambda d, n: prog.update(task, completed=d),
            )
        )
    out = report(records)
    if args.plot:
        for path in plot_load(records, Path(args.plot)):
            console.print(f"wrote {path}")
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print_report(out)
    return 0 if out["completed"] else 1


def print_report(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{out['completed']}/{out['requests']} requests completed, "
                    f"{out['errors']} errors, {out['rejected_429']} deferred (429)")  # fmt: skip
    for col in ("metric", "P50", "P90", "P99"):
        t.add_column(col, justify="right")
    for m in ("ttft", "tpot", "e2e"):
        vals = [out.get(f"{m}_p{q}_s") for q in (50, 90, 99)]
        t.add_row(m.upper(), *("-" if v is None else f"{v:.3f} s" for v in vals))
    Console().print(t)
    cv = out.get("p99_window_cv")
    cv_text = "-" if cv is None else f"{cv:.3f}"
    Console().print(
        f"σ(P99)/mean(P99) over {out.get('p99_windows')} windows: {cv_text}; "
        f"SLO attainment {out.get('slo_attainment', 0):.3f}; "
        f"{out.get('tokens_per_s', 0):.0f} tokens/s"
    )


def plot_load(records: list[Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in records if r.chunks]
    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (name, vals) in zip(axes, (
        ("TTFT", [r.ttft_s for r in ok]), ("ITL", [x for r in ok for x in r.itls]),
        ("E2E", [r.e2e_s for r in ok]),
    ), strict=True):  # fmt: skip
        x = np.sort(np.asarray(vals))
        if x.size:
            ax.plot(x, np.arange(1, x.size + 1) / x.size)
            ax.axvline(np.percentile(x, 99), ls="--", c="r", lw=1, label="P99")
        ax.set_title(f"{name} CDF")
        ax.set_xlabel("seconds")
        ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "load_latency_cdf.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.scatter([r.sent_s for r in ok], [r.e2e_s for r in ok], s=6)
    ax.set_xlabel("request sent at (s)")
    ax.set_ylabel("E2E latency (s)")
    ax.set_title("E2E latency over the replay")
    fig.tight_layout()
    paths.append(out_dir / "load_e2e_over_time.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
