"""Controller core at scale: synthetic snapshots at 4 Hz from N replicas.

Feeds ``orchestrator.controller.Controller`` (the same core as the Ray actor)
one step per 250 ms of virtual time with a fresh snapshot from every replica,
for ``--seconds`` of virtual time, and reports the CPU it used per virtual
second (``cpu_fraction`` of one core) and the process's peak RSS. Bar at 1,000
replicas: ≤ 0.25 of a core and ≤ 1 GiB.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import time
from typing import Any

import numpy as np

from orchestrator.config import load_config
from orchestrator.controller import Controller
from orchestrator.estimates import ClassLoad
from replicas.telemetry import BatchComposition, DecayedStats, ReplicaSnapshot
from uncertainty import Summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0, help="virtual seconds to run")
    parser.add_argument("--hz", type=float, default=4.0, help="snapshots per replica per second")


def _snapshots(n: int, pools: list[str], rng: np.random.Generator) -> list[ReplicaSnapshot]:
    out = []
    for i in range(n):
        pool = pools[i % len(pools)]
        itl = rng.lognormal(np.log(0.015 if i % 2 else 0.025), 0.3, 512)
        summaries = {
            "itl": Summary().update(itl),
            "step": Summary().update(itl),
            "ttft": Summary().update(rng.lognormal(np.log(0.3), 0.5, 32)),
            "e2e": Summary().update(rng.lognormal(np.log(4.0), 0.5, 32)),
            "prefill_step": Summary().update(rng.lognormal(np.log(0.08), 0.3, 64)),
        }
        out.append(
            ReplicaSnapshot(
                replica_id=f"{pool}-{i}", pool=pool, time_s=0.0, running=24, waiting=2,
                kv_blocks_used=400, kv_blocks_total=1000, prefill_s_per_token=1e-4,
                batch=BatchComposition(512, 24, 1.3), summaries=summaries,
                recent={
                    "itl": DecayedStats(float(itl.mean()), float(itl.std()), 500.0, 0.5),
                    "prefill_step": DecayedStats(0.08, 0.02, 60.0, 0.2),
                },
            )
        )  # fmt: skip
    return out


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.replicas < 1 or not args.seconds > 0 or not args.hz > 0:
        raise ValueError("--replicas, --seconds and --hz must be positive")
    cfg = load_config()
    pools = [p.name for p in cfg.pools]
    rng = np.random.default_rng(0)
    base = _snapshots(args.replicas, pools, rng)
    ctl = Controller(cfg)
    period = 1.0 / args.hz
    steps = int(args.seconds / period)
    load = {"default": ClassLoad(rate_per_s=args.replicas * 0.5)}
    step_ms: list[float] = []
    cpu0 = time.process_time()
    for k in range(1, steps + 1):
        now = k * period
        # a new snapshot from every replica (same content, new time: the cost of
        # ingesting, merging and modelling them is what is measured)
        snaps = [dataclasses.replace(s, time_s=now) for s in base]
        t0 = time.process_time()
        ctl.step(now, snaps, load)
        step_ms.append((time.process_time() - t0) * 1e3)
    cpu = time.process_time() - cpu0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    plan = ctl.plan
    return [
        {
            "benchmark": "controller",
            "replicas": args.replicas,
            "snapshots_per_s": args.replicas * args.hz,
            "virtual_s": steps * period,
            "cpu_s": round(cpu, 3),
            "cpu_fraction": round(cpu / (steps * period), 4),
            "step_ms_p50": round(float(np.percentile(step_ms, 50)), 2),
            "step_ms_max": round(max(step_ms), 2),
            "peak_rss_mb": round(rss_mb, 1),
            "plan_status": plan.status.value if plan else None,
        }
    ]
