"""Synthetic snapshots, views and plans for the observability tests (no Ray)."""

from __future__ import annotations

import numpy as np

from orchestrator.config import load_config
from orchestrator.contracts import ClusterView, Plan
from orchestrator.controller import Controller
from orchestrator.estimates import ClassLoad
from replicas.telemetry import ReplicaSnapshot
from tests.builders import measured_snapshot

POOLS = ("llm-h100", "llm-a100")


def snapshot(rid: str, pool: str, t: float, itl_s: float, seed: int = 0) -> ReplicaSnapshot:
    """A replica snapshot with TTFT/ITL/step/prefill/E2E summaries and recent σ."""
    return measured_snapshot(
        rid, pool, t, itl_s, np.random.default_rng(seed), itl_samples=1000, ttft_samples=100,
        kv=0.4, running=12, waiting=3, completed=int(10 * t),
    )  # fmt: skip


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
