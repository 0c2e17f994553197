"""The controller core: ``Controller.step(now_s, snapshots) -> Plan`` (pure).

The same object runs inside the detached Ray controller actor and inside the
simulator, so a decision measured in simulation is the decision Ray makes. Each
step, on the injected clock:

1. ingest snapshots and merge replica → pool → cluster (``orchestrator.monitor``:
   newest per replica, stale ones dropped, exact ``uncertainty.Hierarchy``);
2. (the merged statistics are recomputed at most every second, and before a solve);
3. fit the cascade model on each new snapshot (σ_prefill, KV, heterogeneity →
   σ_decode);
4. run backpressure per pool (decode ITL σ → prefill token budget);
5. every ``loops.routing_period_s``: re-solve the routing optimizer with fresh
   estimates (``orchestrator.estimates``); per-class traffic comes from
   ``report_arrivals`` (the gateway's tallies: the Ray ingress and the simulator
   feed it the same way), else the completion rate split evenly over the classes;
   the interconnect term η_p of TP > 1 pools comes from the measured all-reduce
   profiles (``orchestrator.net_variance``; 0 with a note when a pool has none).
   A failed or infeasible solve keeps the optimizer's typed fallback, and any
   error becomes a STATIC plan with a reason: a step never raises because of
   telemetry or the solver.

6. every ``loops.allocation_period_s``: the elastic allocator (``optim.Allocator``:
   integer replicas per pool within min/max, variance + ``w_cost`` × $/hour, with
   cooldown ``loops.allocation_cooldown_s`` and no move for a change inside the
   arrival-rate confidence interval) sets each pool's ``target_replicas``, which
   the Serve autoscaling policy applies. The allocator's guards hold a pool at
   its target in force, not at its live count: a replica lost with its node
   stops counting for routing once its snapshots are ``loops.stale_after_s``
   old (``Monitor``), but its pool's target is asked for again, never written
   down to what survived.

Until the first allocation, targets are the configured ``initial_replicas``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optim.allocation import AllocationProblem
from optim.hysteresis import Allocator, HysteresisConfig
from optim.results import AllocationResult
from optim.routing import RoutingProblem
from orchestrator.cascade_rows import cascade_rows
from orchestrator.config import CascadeConfig
from orchestrator.contracts import (
    ClusterView,
    Plan,
    PoolPlan,
    SolveStatus,
)
from orchestrator.estimates import (
    ClassLoad,
    ClassTraffic,
    PoolTelemetry,
    class_specs,
    pool_specs,
    pool_telemetry,
    problem_inputs,
    proportional_weights,
)
from orchestrator.monitor import Monitor
from orchestrator.net_variance import NetVariance
from policies import build_policies
from policies.backpressure import Backpressure
from replicas.telemetry import ITL, ReplicaSnapshot
from uncertainty import CascadeModel
from uncertainty.output_length import OutputLengthModel


class Controller:
    """Pure controller core; see the module docstring.

    Args:
        config: the validated Cascade config.
        backpressure: override the config's backpressure policy (tests).
        cascade_model: share a model with the routers (the same object).
    """

    def __init__(
        self,
        config: CascadeConfig,
        *,
        backpressure: Backpressure | None = None,
        cascade_model: CascadeModel | None = None,
    ) -> None:
        self.config = config
        self.cascade = cascade_model or CascadeModel()
        self.backpressure = backpressure or build_policies(config.policy_config()).backpressure
        self.monitor = Monitor([p.name for p in config.pools], config.loops.stale_after_s)
        # η_p of TP > 1 pools from the measured all-reduce profiles (0 for TP 1)
        self.net_variance = NetVariance(config)
        self._version = 0
        self._routing: dict[str, dict[str, float]] = {}
        self._routing_status = SolveStatus.STATIC
        self._routing_reason = "no solve yet"
        self._solve_ms = 0.0
        self._next_solve_s = -math.inf
        self._problem: RoutingProblem | None = None
        self._allocator: Allocator | None = None
        self._next_alloc_s = -math.inf
        self.allocation: AllocationResult | None = None
        # the allocator's targets and the operator's pins (which override them): both
        # replaced whole, never changed in place, so ``targets()`` may read them from
        # the actor's event loop while a step runs in its worker thread
        self._targets = {p.name: p.start_replicas for p in config.pools}
        self.pinned: dict[str, int] = {}
        self.solved_last_step = False  # did the last step run the routing optimizer
        self.traffic = ClassTraffic()
        # output lengths of completed requests, merged from every gateway's deltas
        self.lengths = OutputLengthModel()
        self.lengths_version = 0
        self._lengths_state: dict[str, Any] = {}
        self.view: ClusterView | None = None
        self.plan: Plan | None = None

    # ---- the step ----------------------------------------------------------------
    def step(
        self,
        now_s: float,
        snapshots: Sequence[ReplicaSnapshot],
        class_load: Mapping[str, ClassLoad] | None = None,
    ) -> Plan:
        """Fold ``snapshots`` in and return the new Plan (never raises on data).
        ``class_load`` overrides the traffic estimated from ``report_arrivals``."""
        if not math.isfinite(now_s):
            raise ValueError(f"now_s must be finite, got {now_s!r}")
        self._fit_cascade(self.monitor.ingest(now_s, snapshots))
        self.solved_last_step = now_s >= self._next_solve_s
        # merged statistics are fresh for every solve
        view = self.monitor.view(now_s, self.cascade.coefficients, merge=self.solved_last_step)
        self.view = view
        if self.solved_last_step:
            self._next_solve_s = now_s + self.config.loops.routing_period_s
            self._solve(now_s, view, class_load)
        pool_plans: dict[str, PoolPlan] = {}
        targets = self.targets()
        for pool in self.config.pools:
            pv = view.pools.get(pool.name)
            sigma = pv.itl_sigma_s if pv is not None and math.isfinite(pv.itl_sigma_s) else 0.0
            state = self.backpressure.update(pool.name, now_s, sigma)
            pool_plans[pool.name] = PoolPlan(
                admission_token_budget=int(state.prefill_token_budget),
                saturation=float(state.saturation),
                target_replicas=targets[pool.name],
            )
        self._version += 1
        self.plan = Plan(
            time_s=now_s,
            version=self._version,
            routing=self._routing or self._static_routing(view),
            pools=pool_plans,
            status=self._routing_status,
            solve_ms=self._solve_ms,
            reason=self._routing_reason,
        )
        return self.plan

    def report_arrivals(
        self, counts: Mapping[str, tuple[int, float, float]], period_s: float, now_s: float
    ) -> None:
        """Per class (requests, mean prompt tokens, mean max tokens) over the last
        ``period_s`` seconds, from the gateway (``Gateway.take_arrivals``)."""
        self.traffic.report(counts, period_s, now_s)

    def report_completions(self, delta: OutputLengthModel) -> None:
        """Output lengths a gateway learned since its last report
        (``GatewayPredictor.take_completions``), merged exactly into ``lengths``."""
        if delta.n:
            self.lengths.merge(delta)
            self.lengths_version += 1

    def lengths_state(self) -> dict[str, Any]:
        """The output-length model as routers and ingresses take it
        (``RouterSync.lengths``): ``to_dict()`` plus a ``version`` (made once per
        version: gateways reload only when it changes)."""
        if self._lengths_state.get("version") != self.lengths_version:
            self._lengths_state = {**self.lengths.to_dict(), "version": self.lengths_version}
        return self._lengths_state

    def pin(self, pool: str, replicas: int | None) -> None:
        """Pin ``pool`` to ``replicas`` (an operator override of the allocator, e.g.
        for maintenance); ``None`` hands the pool back to the allocator. Effective
        in ``targets()`` at once. Raises ``ValueError`` naming the pool for an
        unknown pool or a count outside its min/max (nothing changes then)."""
        cfg = self.config.pool(pool) if pool in {p.name for p in self.config.pools} else None
        if cfg is None:
            raise ValueError(f"unknown pool {pool!r}; pools: {[p.name for p in self.config.pools]}")
        if replicas is None:
            self.pinned = {k: v for k, v in self.pinned.items() if k != pool}
            return
        if not cfg.min_replicas <= replicas <= cfg.max_replicas:
            raise ValueError(
                f"pool {pool}: replicas {replicas} outside [{cfg.min_replicas}, {cfg.max_replicas}]"
            )
        self.pinned = {**self.pinned, pool: int(replicas)}

    def targets(self) -> dict[str, int]:
        """Per pool, the replica target in force now: the operator's pin if the
        pool has one, else the allocator's last target (the configured
        ``initial_replicas`` before its first decision, or what ``load_state``
        restored), clipped to the pool's [min, max]. The one rule behind both the
        Plan's ``target_replicas`` (``step``) and the actor's ``get_targets`` (which
        reads it between steps, so a pin, an unpin or a restore shows at once)."""
        pinned, allocated = self.pinned, self._targets  # one read each: both swapped whole
        return {
            p.name: min(max(pinned.get(p.name, allocated[p.name]), p.min_replicas), p.max_replicas)
            for p in self.config.pools
        }

    # ---- restartable state (the controller actor checkpoints it) --------------------
    @property
    def version(self) -> int:
        """Version of the last Plan (0: none yet); each step adds one."""
        return self._version

    def state_dict(self) -> dict[str, Any]:
        """What a restarted controller needs to carry on, as plain JSON-able data:
        the Plan version counter, the fitted cascade model, the operator's pins and
        the allocator's replica targets. Snapshots and merged statistics are not in
        it: replicas push fresh ones within a period."""
        return {
            "version": self._version,
            "cascade": self.cascade.to_dict(),
            "pinned": dict(self.pinned),
            "targets": dict(self._targets),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Take ``state_dict()``'s output (from a controller of the same config).
        Everything is checked first: ``ValueError`` (malformed state, an unknown
        pool, a count outside the pool's min/max) changes nothing. The version
        counter only moves forward. The cascade model is replaced by a new object."""
        try:
            version = int(state["version"])
            cascade = CascadeModel.from_dict(dict(state["cascade"]))
            pinned = {str(k): int(v) for k, v in dict(state.get("pinned", {})).items()}
            targets = {str(k): int(v) for k, v in dict(state.get("targets", {})).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"controller state: {exc!r}") from None
        pools = {p.name: p for p in self.config.pools}
        for what, counts in (("pin", pinned), ("target", targets)):
            for name, n in counts.items():
                p = pools.get(name)
                if p is None or not p.min_replicas <= n <= p.max_replicas:
                    raise ValueError(f"controller state: {what} {name}={n} does not fit the config")
        self.raise_version(version)
        self.cascade = cascade
        self.pinned = pinned
        self._targets = {**self._targets, **targets}

    def raise_version(self, version: int) -> None:
        """Continue the Plan version counter from at least ``version`` (never back)."""
        self._version = max(self._version, int(version))

    def latest_snapshots(self) -> list[ReplicaSnapshot]:
        """The newest fresh snapshot of every live replica (routers read these)."""
        return list(self.monitor.latest.values())

    @property
    def rejected_snapshots(self) -> int:
        """Snapshots rejected: of pools this config does not have, or malformed
        (``monitor.snapshot_problem``; by reason in ``monitor.rejected_reasons``)."""
        return self.monitor.rejected

    # ---- the cascade fit ----------------------------------------------------------
    def _fit_cascade(self, fresh: Sequence[ReplicaSnapshot]) -> None:
        rows = cascade_rows(fresh)
        if rows.size:
            self.cascade.update(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])

    # ---- routing -----------------------------------------------------------------------
    def _static_routing(self, view: ClusterView) -> dict[str, dict[str, float]]:
        live = {p: len(v.replicas) for p, v in view.pools.items()}
        weights = proportional_weights(live)
        return {c.name: dict(weights) for c in self.config.slos.classes}

    def _solve(
        self, now_s: float, view: ClusterView, class_load: Mapping[str, ClassLoad] | None
    ) -> None:
        opt = self.config.optimizer
        if not opt.enabled:
            self._set_static(view, "optimizer disabled")
            return
        telemetry = pool_telemetry(
            self.config, self.monitor.latest.values(), view, self.monitor.hier[ITL]
        )
        if telemetry is None:
            self._set_static(view, "not enough telemetry: a pool has no fresh snapshot")
            return
        classes = self.config.slos.classes
        output = self.monitor.mean_output_tokens()  # answers, not max_tokens
        per_class = self._class_output_tokens()
        measured = class_load if class_load is not None else self.traffic.loads(output, per_class)
        rate = self.monitor.completion_rate() / len(classes)
        even = ClassLoad(rate_per_s=rate, output_tokens=output or 129.0)
        loads = [measured.get(c.name) or even for c in classes]
        try:
            if self._problem is None:
                self._problem = RoutingProblem(
                    pool_specs(self.config, telemetry), class_specs(self.config, loads)
                )
            inputs = problem_inputs(
                loads,
                telemetry,
                w_gpu=opt.w_gpu,
                w_mem=opt.w_mem,
                w_net=opt.w_net,
                rho_max=opt.rho_max,
                net_var_s2=self.net_variance.values(self.monitor.latest.values()),
            )
            result = self._problem.solve(inputs)
        except (ValueError, ArithmeticError) as exc:
            # a wiring or estimate problem must not stop the loop: keep serving
            self._set_static(view, f"optimizer skipped: {exc}")
            return
        names = [p.name for p in self.config.pools]
        x = np.asarray(result.x)
        self._routing = {
            c.name: _normalise({names[j]: float(x[i, j]) for j in range(len(names))})
            for i, c in enumerate(classes)
        }
        self._routing_status = result.status  # a failed solve: the optimizer's fallback x
        self._routing_reason = result.message or str(result.status)
        if self.net_variance.notes:
            self._routing_reason += "; " + "; ".join(self.net_variance.notes.values())
        self._solve_ms = float(result.solve_ms)
        if now_s >= self._next_alloc_s:
            self._next_alloc_s = now_s + self.config.loops.allocation_period_s
            self._allocate(now_s, telemetry, loads, inputs)

    def _allocate(
        self,
        now_s: float,
        telemetry: Sequence[PoolTelemetry],
        loads: Sequence[ClassLoad],
        inputs: Any,
    ) -> None:
        """The slow decision: replicas per pool (see the module docstring)."""
        try:
            if self._allocator is None:
                loops = self.config.loops
                problem = AllocationProblem(
                    pool_specs(self.config, telemetry),
                    class_specs(self.config, loads),
                    cost_weight=self.config.optimizer.w_cost,
                )
                self._allocator = Allocator(
                    problem,
                    HysteresisConfig(
                        up_cooldown_s=loops.allocation_cooldown_s / 2,
                        down_cooldown_s=loops.allocation_cooldown_s,
                    ),
                )
            # the guards hold a pool at its target in force, not at its live count: a
            # replica lost with its node (or still starting) is asked for again
            allocated = self._targets
            result = self._allocator.decide(
                inputs, now_s, current=[allocated[p.name] for p in self.config.pools]
            )
        except (ValueError, ArithmeticError) as exc:
            self._routing_reason += f"; allocation skipped: {exc}"
            return
        self.allocation = result
        self._targets = {
            pool.name: int(n)
            for pool, n in zip(self.config.pools, np.asarray(result.replicas), strict=True)
        }

    def _class_output_tokens(self) -> dict[str, float]:
        """Mean answer length per class once the length model knows it."""
        out = {}
        for c in self.config.slos.classes:
            s = self.lengths.summaries.get((c.name, -1, -1))
            if s is not None and s.n >= self.lengths.min_samples:
                out[c.name] = s.mean
        return out

    def _set_static(self, view: ClusterView, reason: str) -> None:
        self._routing = self._static_routing(view)
        self._routing_status = SolveStatus.STATIC
        self._routing_reason = reason


def _normalise(weights: dict[str, float]) -> dict[str, float]:
    clean = {k: max(v, 0.0) for k, v in weights.items()}
    total = sum(clean.values())
    if total <= 0:
        return {k: 1.0 / len(clean) for k in clean}
    return {k: v / total for k, v in clean.items()}
