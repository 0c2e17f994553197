"""A node lost with its replicas: what the controller core re-derives, on a fake clock.

The contract (``orchestrator.controller`` and ``optim.hysteresis``):

* a replica whose newest snapshot is older than ``loops.stale_after_s`` stops
  counting (``Monitor``): it leaves the pool's view, and the next routing solve
  (every ``loops.routing_period_s``) sizes each pool's share by the replicas
  still reporting;
* the replica *targets* are desired capacity: the allocator's guards hold a pool
  at its target in force, never at its live count, so a lost replica is asked
  for again (Serve places it where it can) and the target is not written down
  to what survived;
* a pool with no replica left has no telemetry: the optimizer cannot run, the
  Plan is STATIC with routing proportional to the live replicas (nothing to the
  empty pool) and the targets stay as they were until the pool reports again.
  (Known limit: the allocator does not move the lost capacity to the pools that
  still have nodes; it does not know which replicas cannot be placed.)

The cluster here is a fake: each pool runs ``min(target, room)`` replicas, where
``room`` is what its nodes can hold; the controller's clock is the ``now_s`` passed
to ``step`` (one step a second).
"""

from __future__ import annotations

import numpy as np

from orchestrator.config import CascadeConfig, parse_config
from orchestrator.contracts import Plan, SolveStatus
from orchestrator.controller import Controller
from orchestrator.estimates import ClassLoad
from tests.builders import measured_snapshot

ITL_S = {"fast": 0.010, "slow": 0.020}
# the rate is known only to ±100 %: the allocator's band holds the start (3, 3)
LOAD = {"default": ClassLoad(rate_per_s=2.0, rate_ci_per_s=2.0)}


def _config() -> CascadeConfig:
    pools = [
        {"name": p, "accelerator": a, "min_replicas": 1, "max_replicas": 6, "initial_replicas": 3}
        for p, a in (("fast", "H100"), ("slow", "A100"))
    ]
    return parse_config({"name": "node-loss", "pools": pools})


class _Cluster:
    """Replicas per pool = min(controller's target, room on the pool's nodes);
    replica ``{pool}{i}`` pushes one snapshot per step while it runs."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.room = {"fast": 6, "slow": 6}
        self.rng = np.random.default_rng(0)

    def step(self, t: float) -> Plan:
        targets = self.ctl.targets()
        snaps = [
            measured_snapshot(f"{pool}{i}", pool, t, itl, self.rng, itl_samples=200)
            for pool, itl in ITL_S.items()
            for i in range(min(targets[pool], self.room[pool]))
        ]
        return self.ctl.step(t, snaps, LOAD)


def _live(ctl: Controller) -> dict[str, int]:
    assert ctl.view is not None
    return {name: len(pv.replicas) for name, pv in ctl.view.pools.items()}


def test_a_lost_node_leaves_routing_at_once_and_its_replicas_are_asked_for_again() -> None:
    cfg = _config()
    ctl = Controller(cfg)
    cluster = _Cluster(ctl)
    stale, period = cfg.loops.stale_after_s, cfg.loops.routing_period_s
    for t in range(100):
        before = cluster.step(float(t))
    assert ctl.targets() == {"fast": 3, "slow": 3} and _live(ctl) == {"fast": 3, "slow": 3}
    share = before.routing["default"]["fast"]

    cluster.room["fast"] = 1  # the node holding two of fast's replicas is gone at t = 100
    gone_at = None
    plans = []
    for t in range(100, 400):  # 10 allocation periods, the cooldowns several times over
        plans.append(cluster.step(float(t)))
        if gone_at is None and _live(ctl)["fast"] == 1:
            gone_at = t
    # their last snapshots (t = 99) count until they are stale_after_s old, no longer
    assert gone_at == 99 + int(stale) + 1
    # routing: the first solve after that sizes fast's share by its one replica
    after = next(p for p in plans if p.time_s >= gone_at + period and p.status.ok)
    assert after.routing["default"]["fast"] < share - 0.05, (share, after.routing)
    # targets: fast's 3 are asked for again at every allocation, never written down to 1
    assert all(p.pools["fast"].target_replicas == 3 for p in plans)
    assert all(p.pools["slow"].target_replicas == 3 for p in plans)
    assert ctl.allocation is not None and ctl.allocation.replicas.tolist() == [3, 3]

    cluster.room["fast"] = 6  # a node with room joins: the asked-for replicas come back
    cluster.step(400.0)
    assert _live(ctl) == {"fast": 3, "slow": 3}


def test_a_pool_with_no_replica_left_gets_no_traffic_and_keeps_its_target() -> None:
    cfg = _config()
    ctl = Controller(cfg)
    cluster = _Cluster(ctl)
    for t in range(60):
        cluster.step(float(t))
    cluster.room["fast"] = 0  # every node of fast's accelerator is gone at t = 60
    plans = [cluster.step(float(t)) for t in range(60, 200)]
    settled = [p for p in plans if p.time_s > 59 + cfg.loops.stale_after_s]
    assert _live(ctl) == {"fast": 0, "slow": 3}
    assert all(p.status is SolveStatus.STATIC for p in settled)
    assert all(p.routing["default"] == {"fast": 0.0, "slow": 1.0} for p in settled)
    assert all(p.pools["fast"].target_replicas == 3 for p in plans)
    assert "no fresh snapshot" in settled[-1].reason
