"""Replay a trace through the simulated cluster under several routing policies.

Examples::

    cascade simulate --trace azure-conv --load 0.8 --policies round-robin,oracle --json
    cascade simulate --config my.yaml --trace my_trace.csv --load 0.5 --duration 600 --plot out/

Every policy runs on the same arrivals and the same seeds. ``--load`` is a
fraction of the cluster's measured capacity for this trace's request mix
(``experiments.simulator.measure_capacity``). With ``--json`` one JSON object per
policy is printed (one per line); without it, a table. Every JSON row also
carries the run's E2E floor (``e2e_floor_p50_s`` … ``e2e_floor_p99_s``,
``e2e_floor_pool``: each request alone on its fastest engine,
``experiments.e2e_floor``), issue 14's E2E P99 bar against it (``bar_*``,
``experiments.e2e_bar``) and the policy's tail against the floor (``e2e_below_floor``,
``e2e_tail_*``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from replicas.kv_eviction import EVICTION_POLICIES
from replicas.prefill_budget import PREFILL_BUDGETS

DEFAULT_POLICIES = "round-robin,least-outstanding,oracle"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=None, help="Cascade YAML (default: the default example)"
    )
    parser.add_argument(
        "--trace", required=True, help="path (.csv Azure, .jsonl Mooncake) or azure-conv, "
        "mooncake, poisson, bursty, mmpp, heavy-tail",
    )  # fmt: skip
    parser.add_argument("--load", type=float, required=True, help="fraction of measured capacity")
    parser.add_argument("--policies", default=DEFAULT_POLICIES, help="comma-separated router names")
    parser.add_argument("--duration", type=float, default=None, help="simulate the first S seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-tokens", default="fixed:4096", metavar="SPEC",
        help="what clients send as max_tokens: fixed:N or multiple:M[:S] "
        "(M x true length x lognormal noise of log-sigma S, seeded; experiments.client)",
    )  # fmt: skip
    parser.add_argument(
        "--kv-eviction", default=None, choices=sorted(EVICTION_POLICIES),
        help="override model.kv_eviction for every pool (replicas.kv_eviction)",
    )  # fmt: skip
    parser.add_argument(
        "--prefill-budget", default=None, choices=PREFILL_BUDGETS,
        help="override model.prefill_budget for every pool: fixed (vLLM's) or slo_slack "
        "(replicas.prefill_budget, against the tightest class tpot_s); --load stays a "
        "fraction of the config's capacity, so both replay the same arrivals",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON object per policy")
    parser.add_argument("--plot", default=None, metavar="DIR", help="write PNG plots to DIR")


def json_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` for JSON: a non-finite number (did not happen) becomes null."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in metrics.items()
    }


def run(args: argparse.Namespace) -> int:
    from experiments.client import ClientMaxTokens
    from experiments.e2e_bar import bar_fields, policy_floor_fields
    from experiments.e2e_floor import e2e_floor
    from experiments.simulator import client_caps, measure_capacity, run_policies
    from orchestrator.traces import load_trace

    if not (math.isfinite(args.load) and args.load > 0):
        raise ValueError(f"--load must be > 0 (a fraction of capacity), got {args.load}")
    if args.duration is not None and not args.duration > 0:
        raise ValueError(f"--duration must be > 0, got {args.duration}")
    client = ClientMaxTokens.parse(args.max_tokens)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if not policies:
        raise ValueError("--policies: give at least one policy")
    setup = setup_for(args.config)
    setup = with_overrides(setup, args.kv_eviction, None)
    stack = stack_factory(args.config)
    trace = load_trace(args.trace, rng=np.random.default_rng(args.seed))
    capacity = measure_capacity(setup, trace, seed=args.seed)
    # the load stays a fraction of the config's capacity: --prefill-budget A/Bs
    # replay the same arrivals (the budget moves measured capacity, 2x on mooncake)
    setup = with_overrides(setup, None, args.prefill_budget)
    scaled = trace.scaled_to_rate(args.load * capacity)
    if args.duration is not None:
        scaled = scaled.head(duration_s=args.duration)
    header = {
        "trace": trace.name, "load": args.load, "capacity_rps": capacity,
        "rate_rps": args.load * capacity, "replicas": setup.replicas, "gpus": setup.gpus,
        "max_tokens": str(client),
        "kv_eviction": ",".join(sorted({p.kv_eviction for p in setup.pools})),
        "prefill_budget": ",".join(sorted({_budget_name(p) for p in setup.pools})),
    }  # fmt: skip
    if args.json:
        results = run_policies(
            setup, scaled, policies, seed=args.seed, stack_factory=stack, client=client
        )
    else:
        results = _run_with_progress(setup, scaled, policies, args.seed, stack, client)
    # the floor needs no policy: each request alone on its fastest engine, with
    # the output lengths every policy's engines generate (experiments.e2e_floor)
    outs = np.minimum(scaled.output_tokens, client_caps(scaled, args.seed, client))
    floor = e2e_floor(setup, scaled, outs)
    header.update(floor.fields())
    rows = [{**r.metrics, **policy_floor_fields(r.log, floor)} for r in results]
    header.update(bar_fields(rows, floor))
    rows = [json_row({**row, **header}) for row in rows]
    if args.json:
        for row in rows:
            sys.stdout.write(json.dumps(row, sort_keys=True) + "\n")
    else:
        _table(rows)
    if args.plot:
        from experiments.plots import write_plots

        for path in write_plots(results, Path(args.plot), window_s=setup.window_s):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def with_overrides(setup: Any, kv_eviction: str | None, prefill_budget: str | None) -> Any:
    """``setup`` (a ``SimSetup``) with every pool's KV eviction policy and prefill
    budget replaced where given; ``slo_slack`` targets the tightest class
    ``tpot_s``, as ``CascadeConfig.prefill_tpot_s`` does for the config key."""
    from dataclasses import replace

    pools = setup.pools
    if kv_eviction is not None:
        pools = tuple(replace(p, kv_eviction=kv_eviction) for p in pools)
    if prefill_budget is not None:
        if prefill_budget not in PREFILL_BUDGETS:
            raise ValueError(
                f"--prefill-budget: {prefill_budget!r} is not one of {PREFILL_BUDGETS}"
            )
        slo = setup.slos.tightest_tpot_s() if prefill_budget == "slo_slack" else None
        pools = tuple(replace(p, prefill_tpot_slo_s=slo) for p in pools)
    return replace(setup, pools=pools)


def _budget_name(pool: Any) -> str:
    return "fixed" if pool.prefill_tpot_slo_s is None else "slo_slack"


def setup_for(config_path: str | None) -> Any:
    """The ``SimSetup`` of ``config_path``; without one, the default example when
    it can be simulated, else the built-in 8×H100 + 8×A100 cluster (a note on
    stderr says so)."""
    from experiments.sim_config import default_setup, load_setup

    if config_path is not None:
        return load_setup(config_path)
    try:
        return load_setup(None)
    except ValueError as exc:
        # the default example may describe CPU stand-ins the profiles do not cover
        print(f"note: default config not simulable ({exc}); using the built-in "
              "8×H100 + 8×A100 Llama-2-7B cluster", file=sys.stderr)  # fmt: skip
        return default_setup()


def stack_factory(config_path: str | None) -> Any:
    """The ``cascade`` policy runs the controller + admission of the config file
    (``experiments.cascade_stack``); None when the config cannot be loaded."""
    from experiments.cascade_stack import stack_for
    from orchestrator.config import DEFAULT_CONFIG, load_config

    try:
        cfg = load_config(config_path or DEFAULT_CONFIG)
    except (ValueError, FileNotFoundError):
        cfg = None
    return lambda name: stack_for(name, cfg)


def _run_with_progress(
    setup: Any, trace: Any, policies: list[str], seed: int, stack: Any = None, client: Any = None
) -> list[Any]:
    from rich.progress import Progress

    from experiments.simulator import run_policies

    with Progress(transient=True) as prog:
        tasks = {p: prog.add_task(p, total=1.0) for p in policies}

        def cb(name: str, frac: float) -> None:
            prog.update(tasks[name], completed=frac)

        return run_policies(
            setup, trace, policies, seed=seed, progress=cb, stack_factory=stack, client=client
        )


def _table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = [
        ("policy", "policy", "{}"), ("done", "completed", "{}"),
        ("TTFT p50", "ttft_p50_s", "{:.3f}"),
        ("TTFT p99", "ttft_p99_s", "{:.3f}"), ("TPOT p99", "tpot_p99_s", "{:.4f}"),
        ("E2E p50", "e2e_p50_s", "{:.2f}"), ("E2E p99", "e2e_p99_s", "{:.2f}"),
        ("P99 win CV", "p99_window_cv", "{:.3f}"), ("SLO", "slo_attainment", "{:.3f}"),
        ("goodput/GPU·s", "goodput_per_gpu_s", "{:.3f}"), ("GPU util", "gpu_util", "{:.2f}"),
        ("KV hit", "kv_hit_rate", "{:.3f}"),
        ("preempt", "preemptions", "{}"), ("wall s", "wall_s", "{:.1f}"),
    ]  # fmt: skip
    r0 = rows[0] if rows else {}
    table = Table(
        title=f"{r0.get('trace')} at load {r0.get('load')} "
        f"({r0.get('rate_rps', 0):.1f} req/s, {r0.get('replicas')} replicas)"
    )
    for title, _, _ in cols:
        table.add_column(title, justify="right")
    for row in rows:
        table.add_row(*("-" if row.get(k) is None else fmt.format(row[k]) for _, k, fmt in cols))
    Console().print(table)
