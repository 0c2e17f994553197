"""The detached, named controller actor: ``cascade-controller`` in namespace ``cascade``.

It wraps the pure ``Controller`` core. Replicas ``push`` snapshots (batched,
fire-and-forget); routers call ``router_sync`` (snapshots, Plan and the cascade
fit in one answer, their own report in the question) and the ingress polls
``get_plan``, never on a request's path; the autoscaling policy reads ``get_targets``. The
core's ``step`` (merge, cascade fit, backpressure, optimizer) runs every
``loops.snapshot_period_s`` in a worker thread, so a slow solve never blocks
ingestion. Published results are immutable objects swapped atomically.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import ray

from orchestrator.config import CascadeConfig, parse_config
from orchestrator.contracts import ClusterView, Plan, RouterReport, RouterSync
from orchestrator.controller import Controller
from orchestrator.estimates import ClassLoad
from orchestrator.metrics import ControllerMetrics
from orchestrator.routing_core import cascade_theta
from replicas.deployment import CONTROLLER_NAME, CONTROLLER_NAMESPACE
from replicas.telemetry import ReplicaSnapshot
from uncertainty import DecayedWelford

logger = logging.getLogger("cascade.controller")
_ROUTER_TTL_S = 60.0  # a router that has not synced for this long is forgotten


@ray.remote(num_cpus=0, max_concurrency=64)  # type: ignore[call-overload]
class ControllerActor:
    """See the module docstring. ``config`` is the validated config as a dict."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config: CascadeConfig = parse_config(config, "controller config")
        self.core = Controller(self.config)
        self._inbox: list[ReplicaSnapshot] = []
        self._snapshots: tuple[ReplicaSnapshot, ...] = ()
        self._plan: Plan | None = None
        self._view: ClusterView | None = None
        self._arrivals: dict[str, DecayedWelford] = {}
        self._shape: dict[str, tuple[float, float]] = {}
        self.steps = 0
        self.step_errors = 0
        self.received = 0
        self._task: asyncio.Task[None] | None = None
        self.metrics = ControllerMetrics()
        self.metric_errors = 0
        self._routers: dict[str, tuple[float, RouterReport]] = {}
        self._cascade_state: dict[str, Any] | None = None  # published with the Plan
        self._cascade_theta: tuple[float, ...] = cascade_theta(self.core.cascade)
        self._theta_by_version: dict[int, tuple[float, ...]] = {}

    async def ready(self) -> bool:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return True

    async def push(self, snapshots: list[ReplicaSnapshot]) -> None:
        self._inbox.extend(snapshots)
        self.received += len(snapshots)

    async def report_arrivals(
        self, counts: Mapping[str, tuple[int, float, float]], period_s: float
    ) -> None:
        """From the ingress: per class (requests, mean prompt tokens, mean max
        tokens) over the last ``period_s`` seconds."""
        now = time.time()
        for cls, (n, prompt, output) in counts.items():
            est = self._arrivals.setdefault(cls, DecayedWelford(halflife_s=30.0))
            est.update([n / max(period_s, 1e-3)], [now])
            if n:
                self._shape[cls] = (prompt, output)

    async def _loop(self) -> None:
        period = self.config.loops.snapshot_period_s
        while True:
            await asyncio.sleep(period)
            batch, self._inbox = self._inbox, []
            loads = {
                c: ClassLoad(
                    rate_per_s=max(est.mean, 0.0),
                    rate_ci_per_s=_half_width(est),
                    prompt_tokens=self._shape.get(c, (1020.0, 129.0))[0],
                    output_tokens=self._shape.get(c, (1020.0, 129.0))[1],
                )
                for c, est in self._arrivals.items()
                if est.count
            }
            try:
                plan = await asyncio.to_thread(self.core.step, time.time(), batch, loads or None)
            except Exception:  # the loop must survive anything a step throws
                self.step_errors += 1
                logger.exception("controller step failed")
                continue
            self._plan, self._view = plan, self.core.view
            try:
                if self._view is not None:
                    solved = self.core.solved_last_step and plan.status.value != "static"
                    self.metrics.export(
                        self._view, plan, solve_ms=plan.solve_ms if solved else None
                    )
            except Exception:  # metrics must never stop the control loop
                self.metric_errors += 1
            self._snapshots = tuple(self.core.latest_snapshots())
            self._cascade_state = self.core.cascade.to_dict()
            self._cascade_theta = cascade_theta(self.core.cascade)
            # the fit published with each recent Plan: lets status tell whether a
            # router's model is exactly the one that came with its Plan version
            self._theta_by_version[plan.version] = self._cascade_theta
            while len(self._theta_by_version) > 256:
                del self._theta_by_version[next(iter(self._theta_by_version))]
            self.steps += 1

    async def get_plan(self) -> Plan | None:
        return self._plan

    async def get_view(self) -> ClusterView | None:
        return self._view

    async def get_snapshots(self) -> tuple[ReplicaSnapshot, ...]:
        return self._snapshots

    async def router_sync(self, router_id: str, report: RouterReport | None) -> RouterSync:
        """A router's background refresh: record its ``report`` and answer with
        the latest snapshots, Plan and cascade-model state. Routers silent for
        ``_ROUTER_TTL_S`` are forgotten (e.g. a handle's process that exited)."""
        now = time.time()
        if report is not None:
            self._routers[router_id] = (now, report)
        for rid in [r for r, (t, _) in self._routers.items() if now - t > _ROUTER_TTL_S]:
            del self._routers[rid]
        return RouterSync(
            time_s=now,
            snapshots=self._snapshots,
            plan=self._plan,
            cascade=self._cascade_state,
        )

    async def pin(self, pool: str, replicas: int | None) -> dict[str, int]:
        """Operator override of a pool's replica target (``None``: back to the
        allocator); effective from the next step. Returns the pins."""
        self.core.pin(pool, replicas)
        return dict(self.core.pinned)

    async def get_targets(self) -> dict[str, int]:
        plan = self._plan
        if plan is None:
            return {p.name: p.start_replicas for p in self.config.pools}
        return {name: pp.target_replicas for name, pp in plan.pools.items()}

    async def status(self) -> dict[str, Any]:
        now = time.time()
        return {
            "steps": self.steps,
            "step_errors": self.step_errors,
            "snapshots_received": self.received,
            "rejected_snapshots": self.core.rejected_snapshots,
            "replicas": sorted(s.replica_id for s in self._snapshots),
            "cascade_theta": self._cascade_theta,
            "plan_version": self._plan.version if self._plan is not None else 0,
            "routers": {
                rid: {
                    "seen_s_ago": now - t,
                    # its scorer's cascade model is the fit published with its Plan
                    "fit_matches_plan": self._theta_by_version.get(rep.plan_version)
                    == tuple(rep.cascade_theta),
                    **asdict(rep),
                }
                for rid, (t, rep) in sorted(self._routers.items())
            },
        }


def _half_width(est: DecayedWelford) -> float:
    lo, hi = est.ci(0.95)
    return float((hi - lo) / 2) if hi == hi and lo == lo else 0.0


def start_controller(config: CascadeConfig) -> Any:
    """Get or create the detached controller actor and start its loop."""
    actor = ControllerActor.options(  # type: ignore[attr-defined]
        name=CONTROLLER_NAME,
        namespace=CONTROLLER_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
    ).remote(config.model_dump(mode="json"))
    ray.get(actor.ready.remote())
    return actor
