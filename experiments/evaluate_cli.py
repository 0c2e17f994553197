"""``cascade evaluate``: the whole evaluation, several loads × several policies, as
one command and one report.

Example::

    cascade evaluate --trace azure-conv --loads 0.5,0.8,0.95 --duration 60 --out eval/

Every (load, policy) is one ``experiments.simulator.simulate`` run on the same
arrivals and seeds (``run_policies``); loads are fractions of the measured
capacity, as in ``cascade simulate``. Writes into ``--out``:

* ``results.jsonl``: one JSON object per (load, policy), the simulator's metrics
  (``experiments.metrics``) plus the run's header (trace, load, rate, seed, ...)
  and goodput over the load's common span
  (``experiments.evaluation.on_common_span``); written as each load finishes;
* ``report.md``: the tables, URE, definitions, commit and command
  (``experiments.eval_report``);
* PNGs (``experiments.eval_plots``): latency quantiles, SLO / goodput / tail /
  waste vs load, utilization vs variance; and, at the highest load, the latency
  CDFs and P99 over time (``experiments.plots``).

A progress bar runs on stderr; stdout gets the paths written.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from experiments.cli_values import positive_floats

DEFAULT_LOADS = "0.5,0.65,0.8,0.95"
DEFAULT_POLICIES = "cascade,pow2,least_outstanding,kv_usage,prefix_cache,dynamo_cost"
ROOT = Path(__file__).resolve().parents[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="Cascade YAML (default: as simulate)")
    parser.add_argument("--trace", required=True, help="a trace path or name, as simulate")
    parser.add_argument("--loads", default=DEFAULT_LOADS, help="fractions of measured capacity")
    parser.add_argument("--policies", default=DEFAULT_POLICIES, help="comma-separated policies")
    parser.add_argument(
        "--duration", type=float, default=300.0, help="simulate the first S seconds at each load"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--window", type=float, default=10.0,
        help="tail-predictability window (s of arrivals; windows need >= 20 completions)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", default=None,
        help="URE baseline policy (default: the baseline with the least sigma^2 at each load)",
    )  # fmt: skip
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--overhead-pct", type=float, default=None, help="telemetry overhead, %%")
    src.add_argument(
        "--overhead-json", default=None, metavar="FILE",
        help="output of `cascade bench overhead --json` (default: docs/benchmarks.md's figure)",
    )  # fmt: skip
    parser.add_argument("--max-tokens", default="fixed:4096", metavar="SPEC", help="as simulate")
    parser.add_argument("--out", required=True, metavar="DIR", help="report directory")


def _floats(text: str, what: str) -> list[float]:
    return sorted(set(positive_floats(text, what)))


def commit_of(root: Path = ROOT) -> str:
    """``git rev-parse HEAD`` of ``root`` (``+dirty`` when tracked files changed);
    ``unknown`` when it is not a git checkout or git is missing."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "") if head else "unknown"


def command_of(args: argparse.Namespace) -> str:
    """The command that reproduces this run, every default spelled out."""
    import shlex

    parts = ["cascade", "evaluate", "--trace", args.trace, "--loads", args.loads,
             "--policies", args.policies, "--duration", f"{args.duration:g}",
             "--seed", str(args.seed), "--window", f"{args.window:g}",
             "--max-tokens", args.max_tokens]  # fmt: skip
    for flag, value in (("--config", args.config), ("--baseline", args.baseline),
                        ("--overhead-pct", args.overhead_pct),
                        ("--overhead-json", args.overhead_json)):  # fmt: skip
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join([*parts, "--out", args.out])


def _overhead(args: argparse.Namespace) -> Any:
    from experiments.evaluation import (
        OverheadFigure,
        overhead_from_bench_json,
        overhead_from_benchmarks_md,
    )

    if args.overhead_pct is not None:
        return OverheadFigure(args.overhead_pct, "--overhead-pct (given on the command line)")
    if args.overhead_json is not None:
        return overhead_from_bench_json(Path(args.overhead_json))
    return overhead_from_benchmarks_md()


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from experiments.client import ClientMaxTokens
    from experiments.eval_plots import write_eval_plots
    from experiments.eval_report import write_report
    from experiments.evaluation import on_common_span
    from experiments.plots import write_plots
    from experiments.simulate_cli import json_row, setup_for, stack_factory
    from experiments.simulator import measure_capacity, run_policies
    from orchestrator.traces import load_trace

    loads = _floats(args.loads, "--loads")
    policies = list(dict.fromkeys(p.strip() for p in args.policies.split(",") if p.strip()))
    if not policies:
        raise ValueError("--policies: give at least one policy")
    if not args.duration > 0 or not args.window > 0:
        raise ValueError("--duration and --window must be > 0")
    if args.baseline is not None:
        from experiments.evaluation import pick_baseline

        pick_baseline(dict.fromkeys(policies, 0.0), args.baseline)  # refused now, not at the end
    client = ClientMaxTokens.parse(args.max_tokens)
    overhead = _overhead(args)  # refuse a missing figure before the long part
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setup = replace(setup_for(args.config), window_s=args.window)
    stack = stack_factory(args.config)
    trace = load_trace(args.trace, rng=np.random.default_rng(args.seed))
    capacity = measure_capacity(setup, trace, seed=args.seed)
    rows: list[dict[str, Any]] = []
    last: list[Any] = []
    runs = len(loads) * len(policies)
    with (out / "results.jsonl").open("w") as jsonl, Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=Console(stderr=True), transient=True,
    ) as prog:  # fmt: skip
        task = prog.add_task("evaluate", total=runs)
        for li, load in enumerate(loads):
            scaled = trace.scaled_to_rate(load * capacity).head(duration_s=args.duration)

            def cb(name: str, frac: float, li: int = li, load: float = load) -> None:
                done = li * len(policies) + policies.index(name) + frac
                prog.update(task, completed=done, description=f"load {load:g} · {name}")

            last = run_policies(setup, scaled, policies, seed=args.seed, progress=cb,
                                stack_factory=stack, client=client)  # fmt: skip
            header = {
                "trace": trace.name, "load": load, "capacity_rps": capacity,
                "rate_rps": load * capacity, "replicas": setup.replicas, "gpus": setup.gpus,
                "max_tokens": str(client), "seed": args.seed, "duration_s": args.duration,
                "window_s": args.window,
            }  # fmt: skip
            for row in on_common_span([json_row({**r.metrics, **header}) for r in last]):
                rows.append(row)
                jsonl.write(json.dumps(row, sort_keys=True) + "\n")
            jsonl.flush()
            prog.update(task, completed=(li + 1) * len(policies))
    written = [out / "results.jsonl"]
    written += write_eval_plots(rows, out)
    written += write_plots(last, out, window_s=args.window)
    written.append(
        write_report(
            rows, out, overhead=overhead, baseline=args.baseline, commit=commit_of(),
            command=command_of(args), plots=[p.name for p in written if p.suffix == ".png"],
            setup=setup, top_load=loads[-1],
        )
    )  # fmt: skip
    for path in written:
        print(path)
    return 0
