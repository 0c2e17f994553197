"""Synthetic snapshots, views and plans for the observability tests (no Ray)."""

from __future__ import annotations

import numpy as np

from orchestrator.config import load_config
from orchestrator.contracts import ClusterView, Plan
from orchestrator.controller import Controller
from orchestrator.estimates import ClassLoad
from replicas.telemetry import BatchComposition, DecayedStats, ReplicaSnapshot
from uncertainty import Summary

POOLS = ("llm-h100", "llm-a100")


def snapshot(rid: str, pool: str, t: float, itl_s: float, seed: int = 0) -> ReplicaSnapshot:
    """A replica snapshot with TTFT/ITL/step/prefill/E2E summaries and recent σ."""
    rng = np.random.default_rng(seed)
    itl = rng.lognormal(np.log(itl_s), 0.2, 1000)
    step = itl * rng.uniform(0.9, 1.1, itl.size)
    pre = rng.lognormal(np.log(8 * itl_s), 0.3, 200)
    ttft = rng.lognormal(np.log(20 * itl_s), 0.4, 100)
    e2e = rng.lognormal(np.log(130 * itl_s), 0.3, 100)

    def recent(x: np.ndarray) -> DecayedStats:
        return DecayedStats(float(x.mean()), float(x.std()), float(x.size), 0.5)

    return ReplicaSnapshot(
        replica_id=rid,
        pool=pool,
        time_s=t,
        running=12,
        waiting=3,
        kv_blocks_used=400,
        kv_blocks_total=1000,
        prefill_s_per_token=itl_s / 100,
        completed=int(10 * t),
        batch=BatchComposition(prefill_tokens=512, decode_seqs=12, heterogeneity=1.3),
        summaries={
            "ttft": Summary().update(ttft),
            "itl": Summary().update(itl),
            "step": Summary().update(step),
            "prefill_step": Summary().update(pre),
            "e2e": Summary().update(e2e),
        },
        recent={"itl": recent(itl), "prefill_step": recent(pre), "step": recent(step)},
    )


def snapshots(t: float, per_pool: int = 2) -> list[ReplicaSnapshot]:
    out = []
    for j, (pool, itl) in enumerate(zip(POOLS, (0.010, 0.020), strict=True)):
        out += [snapshot(f"{pool}-{i}", pool, t, itl, seed=10 * j + i) for i in range(per_pool)]
    return out


def view_and_plan(steps: int = 2) -> tuple[ClusterView, Plan, list[ReplicaSnapshot]]:
    """Run the real controller core over a few steps of synthetic snapshots."""
    ctl = Controller(load_config())
    plan = None
    snaps: list[ReplicaSnapshot] = []
    for k in range(steps):
        snaps = snapshots(1.0 + k)
        plan = ctl.step(1.0 + k, snaps, {"default": ClassLoad(rate_per_s=10.0)})
    assert ctl.view is not None and plan is not None
    return ctl.view, plan, snaps
