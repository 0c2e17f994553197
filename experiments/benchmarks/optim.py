"""Solve times of the optimizer: routing re-solves and GPU allocation (issue 5 bars).

Bars on one core: 2 pools × 8 classes re-solve <= 5 ms p50; 16 pools × 32 classes
re-solve <= 50 ms p50; allocation for 2 pools <= 200 ms. Each re-solve gets fresh
parameter values (arrival rates and variance scales drawn ±10 % around a
synthetic instance), as the controller's loop would. ``resolve_ms_*`` are wall
times (what the controller waits); ``resolve_cpu_ms_p50`` is this process's CPU
time, the fairer figure on a shared machine. ``allocation_ms`` is the p50 of
warm allocation searches; ``allocation_gap`` compares the search with brute
force (2 pools only, all 64 allocations of 1..8 replicas).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np

from experiments.benchmarks.timing import pin_to_one_core
from optim.allocation import AllocationProblem
from optim.inputs import ProblemInputs
from optim.routing import RoutingProblem
from optim.synthetic import feasible_classes, synthetic_inputs, synthetic_specs

SWEEP_POOLS = (2, 4, 8, 16, 32, 64)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pools", type=int, default=2, help="number of pools")
    parser.add_argument("--classes", type=int, default=8, help="number of request classes")
    parser.add_argument("--repeats", type=int, default=100, help="timed routing re-solves")
    parser.add_argument(
        "--allocation-repeats", type=int, default=5, help="timed allocation searches"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic instance")
    parser.add_argument(
        "--gap-instances",
        type=int,
        default=0,
        help="also compare the allocation search with brute force on this many random "
        "2-3 pool instances (half with binding GPU budgets); one extra JSON line",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help=f"one line per pool count in {SWEEP_POOLS} (with --classes), instead of --pools",
    )


def _fresh(base: ProblemInputs, rng: np.random.Generator) -> ProblemInputs:
    """New telemetry: rates and variance scales within ±10 % of the base instance."""

    def jitter(a: np.ndarray) -> np.ndarray:
        return a * rng.uniform(0.9, 1.1, size=a.shape)

    return base.replace(
        arrival_rate_per_s=jitter(base.arrival_rate_per_s),
        gpu_var_s2=jitter(base.gpu_var_s2),
        kv_var_s2=jitter(base.kv_var_s2),
    )


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def bench_one(
    num_pools: int, num_classes: int, repeats: int, allocation_repeats: int, seed: int
) -> dict[str, Any]:
    """Time one instance size; see the module doc for the fields."""
    if num_pools < 1 or num_classes < 1 or repeats < 1 or allocation_repeats < 1:
        raise ValueError("--pools, --classes, --repeats and --allocation-repeats must be >= 1")
    rng = np.random.default_rng(seed)
    pools, classes = synthetic_specs(num_pools, num_classes, rng)
    base = synthetic_inputs(pools, classes, rng, load=0.5, replicas=3)
    classes = feasible_classes(classes, base, headroom=4.0)

    t0 = time.perf_counter()
    problem = RoutingProblem(pools, classes)  # build + DPP check
    first = problem.solve(base)  # + canonicalization and the first solve
    first_ms = (time.perf_counter() - t0) * 1e3
    times, cpu_times, statuses, rounds = [], [], Counter[str](), []
    result = first
    for _ in range(repeats):
        inputs = _fresh(base, rng)
        cpu0 = time.process_time()
        result = problem.solve(inputs)
        cpu_times.append((time.process_time() - cpu0) * 1e3)
        times.append(result.solve_ms)
        statuses[str(result.status)] += 1
        rounds.append(result.rounds)

    if num_pools == 2:  # brute force stays cheap: 8 x 8 allocations
        pools = tuple(replace(p, max_replicas=8) for p in pools)
    allocation = AllocationProblem(pools, classes, cost_weight=0.01)
    t0 = time.perf_counter()
    search = allocation.search(base)
    allocation_first_ms = (time.perf_counter() - t0) * 1e3
    alloc_times = []
    for _ in range(allocation_repeats):
        inputs = _fresh(base, rng)
        t0 = time.perf_counter()
        search = allocation.search(inputs)
        alloc_times.append((time.perf_counter() - t0) * 1e3)
    gap: float | None = None  # JSON null: not measured (brute force only for 2 pools)
    if num_pools == 2 and search.best is not None:
        exact = allocation.brute_force(inputs)
        if exact is not None:
            gap = (search.best.total - exact.total) / exact.total

    return {
        "pools": num_pools,
        "classes": num_classes,
        "repeats": repeats,
        "solver": "CLARABEL",
        "fast_path": problem.fast_path_active,
        "first_solve_ms": round(first_ms, 3),
        "first_status": str(first.status),
        "resolve_ms_p50": round(_percentile(times, 50), 3),
        "resolve_ms_p99": round(_percentile(times, 99), 3),
        "resolve_cpu_ms_p50": round(_percentile(cpu_times, 50), 3),
        "resolve_rounds_mean": round(float(np.mean(rounds)), 3),
        "statuses": dict(statuses),
        "status": str(result.status),
        "allocation_first_ms": round(allocation_first_ms, 3),
        "allocation_ms": round(_percentile(alloc_times, 50), 3),
        "allocation_evaluations": len(search.evaluated),
        "allocation_status": str(search.status),
        "allocation_gap": gap,
    }


def gap_sweep(count: int, seed: int) -> dict[str, Any]:
    """Search vs brute force on ``count`` random small instances (the docs' gap figures)."""
    gaps, interior, evaluations, infeasible = [], 0, [], 0
    for i in range(count):
        rng = np.random.default_rng(seed + 100 + i)
        num_pools = 3 if i % 3 == 0 else 2
        top = 5 if num_pools == 3 else 8
        pools, classes = synthetic_specs(num_pools, 4, rng)
        pools = tuple(replace(p, max_replicas=top) for p in pools)
        inputs = synthetic_inputs(pools, classes, rng, load=rng.uniform(0.4, 0.9), replicas=2)
        classes = feasible_classes(classes, inputs, headroom=rng.uniform(2.5, 5.0))
        limits = None
        if i % 2:  # GPU budgets at 60 % of the pools' maximums (never below the minimums)
            types = {p.gpu_type for p in pools}
            limits = {
                t: max(
                    int(0.6 * sum(p.tp_size * p.max_replicas for p in pools if p.gpu_type == t)),
                    sum(p.tp_size * p.min_replicas for p in pools if p.gpu_type == t),
                )
                for t in types
            }
        problem = AllocationProblem(
            pools, classes, gpu_limits=limits, cost_weight=10 ** rng.uniform(-3.5, -1.5)
        )
        found, exact = problem.search(inputs), problem.brute_force(inputs)
        if found.best is None or exact is None:
            infeasible += 1
            continue
        gaps.append((found.best.total - exact.total) / exact.total)
        interior += any(1 < v < top for v in exact.replicas)
        evaluations.append(len(found.evaluated))
    return {
        "gap_instances": count,
        "gap_max": max(gaps) if gaps else None,
        "gap_mean": float(np.mean(gaps)) if gaps else None,
        "gap_over_1pct": sum(g > 0.01 for g in gaps),
        "interior_optima": interior,
        "infeasible_instances": infeasible,
        "search_evaluations_max": max(evaluations) if evaluations else None,
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    cpu = pin_to_one_core()
    sizes = SWEEP_POOLS if args.sweep else (int(args.pools),)
    rows = []
    for num_pools in sizes:
        row = bench_one(
            num_pools,
            int(args.classes),
            int(args.repeats),
            int(args.allocation_repeats),
            int(args.seed),
        )
        row["cpu"] = cpu
        rows.append(row)
    if args.gap_instances > 0:
        rows.append(gap_sweep(int(args.gap_instances), int(args.seed)))
    return rows
