"""The controller core: ``Controller.step(now_s, snapshots) -> Plan`` (pure).

The same object runs inside the detached Ray controller actor and inside the
simulator, so a decision measured in simulation is the decision Ray makes. Each
step, on the injected clock:

1. ingest snapshots: keep the newest per replica, ignore older duplicates and
   snapshots staler than ``loops.stale_after_s`` (a dead replica stops counting);
2. merge replica → pool → cluster (``uncertainty.Hierarchy``, exact);
3. fit the cascade model on each new snapshot (σ_prefill, KV, heterogeneity →
   σ_decode);
4. run backpressure per pool (decode ITL σ → prefill token budget);
5. every ``loops.routing_period_s``: re-solve the routing optimizer with fresh
   estimates (``orchestrator.estimates``); per-class traffic comes from
   ``report_arrivals`` (the gateway's tallies: the Ray ingress and the simulator
   feed it the same way), else the completion rate split evenly over the classes.
   A failed or infeasible solve keeps the optimizer's typed fallback, and any
   error becomes a STATIC plan with a reason: a step never raises because of
   telemetry or the solver.

6. every ``loops.allocation_period_s``: the elastic allocator (``optim.Allocator``:
   integer replicas per pool within min/max, variance + ``w_cost`` × $/hour, with
   cooldown ``loops.allocation_cooldown_s`` and no move for a change inside the
   arrival-rate confidence interval) sets each pool's ``target_replicas``, which
   the Serve autoscaling policy applies.

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
from optim.specs import ClassSpec, PoolSpec
from optim.tail import gaussian_kappa
from orchestrator.config import CascadeConfig
from orchestrator.contracts import (
    ClusterView,
    LevelStats,
    Plan,
    PoolPlan,
    PoolView,
    SolveStatus,
)
from orchestrator.estimates import (
    ClassLoad,
    ClassTraffic,
    PoolTelemetry,
    problem_inputs,
    proportional_weights,
)
from policies import build_policies
from policies.backpressure import Backpressure
from replicas.telemetry import ITL, METRICS, PREFILL_STEP, STEP, ReplicaSnapshot
from uncertainty import CascadeModel, Hierarchy, Summary

_QS = (0.5, 0.9, 0.99)
# Merged latency statistics (replica → pool → cluster) are recomputed at most this
# often, and always before a solve: routers act on snapshots, not on these, and a
# full re-merge of 1,000 replicas costs ~0.1 s.
MERGE_PERIOD_S = 1.0


def _level(s: Summary) -> LevelStats:
    if s.n == 0:
        return LevelStats(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    p50, p90, p99 = (float(v) for v in s.quantiles(_QS))
    return LevelStats(s.n, s.mean, s.std, p50, p90, p99)


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
        self._latest: dict[str, ReplicaSnapshot] = {}
        self._hier: dict[str, Hierarchy] = {m: Hierarchy() for m in METRICS}
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
        self._targets = {p.name: p.start_replicas for p in config.pools}
        self.pinned: dict[str, int] = {}  # operator pins override the allocator
        self.rejected_snapshots = 0
        self.solved_last_step = False  # did the last step run the routing optimizer
        self._rates: dict[str, float] = {}  # replica -> completions/s (last interval)
        self._merged_t = -math.inf
        self._pool_metrics: dict[str, dict[str, LevelStats]] = {}
        self._cluster_metrics: dict[str, LevelStats] = {}
        self._stale: tuple[str, ...] = ()
        self.traffic = ClassTraffic()
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
        self._ingest(now_s, snapshots)
        view = self._build_view(now_s)
        self.view = view
        self.solved_last_step = now_s >= self._next_solve_s
        if self.solved_last_step:
            self._next_solve_s = now_s + self.config.loops.routing_period_s
            self._solve(now_s, view, class_load)
        pool_plans: dict[str, PoolPlan] = {}
        for pool in self.config.pools:
            pv = view.pools.get(pool.name)
            sigma = pv.itl_sigma_s if pv is not None and math.isfinite(pv.itl_sigma_s) else 0.0
            state = self.backpressure.update(pool.name, now_s, sigma)
            target = self.pinned.get(pool.name, self._targets[pool.name])
            target = min(max(target, pool.min_replicas), pool.max_replicas)
            pool_plans[pool.name] = PoolPlan(
                admission_token_budget=int(state.prefill_token_budget),
                saturation=float(state.saturation),
                target_replicas=target,
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

    def pin(self, pool: str, replicas: int | None) -> None:
        """Pin ``pool`` to ``replicas`` (an operator override of the allocator, e.g.
        for maintenance); ``None`` hands the pool back to the allocator. Raises
        ``ValueError`` for an unknown pool or a count outside its min/max."""
        cfg = self.config.pool(pool) if pool in {p.name for p in self.config.pools} else None
        if cfg is None:
            raise ValueError(f"unknown pool {pool!r}; pools: {[p.name for p in self.config.pools]}")
        if replicas is None:
            self.pinned.pop(pool, None)
            return
        if not cfg.min_replicas <= replicas <= cfg.max_replicas:
            raise ValueError(
                f"pool {pool}: replicas {replicas} outside [{cfg.min_replicas}, {cfg.max_replicas}]"
            )
        self.pinned[pool] = replicas

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
        self._targets.update(targets)

    def raise_version(self, version: int) -> None:
        """Continue the Plan version counter from at least ``version`` (never back)."""
        self._version = max(self._version, int(version))

    def latest_snapshots(self) -> list[ReplicaSnapshot]:
        """The newest fresh snapshot of every live replica (routers read these)."""
        return list(self._latest.values())

    # ---- ingestion -----------------------------------------------------------------
    def _ingest(self, now_s: float, snapshots: Sequence[ReplicaSnapshot]) -> None:
        pools = {p.name for p in self.config.pools}
        fresh: list[ReplicaSnapshot] = []
        for snap in snapshots:
            prev = self._latest.get(snap.replica_id)
            if snap.pool not in pools or (prev is not None and snap.time_s <= prev.time_s):
                self.rejected_snapshots += snap.pool not in pools
                continue
            if prev is not None:
                dt = snap.time_s - prev.time_s
                self._rates[snap.replica_id] = max(snap.completed - prev.completed, 0) / dt
            self._latest[snap.replica_id] = snap
            fresh.append(snap)
        stale_after = self.config.loops.stale_after_s
        stale = []
        for rid, snap in list(self._latest.items()):
            if now_s - snap.time_s > stale_after:
                stale.append(rid)
                del self._latest[rid]
                self._rates.pop(rid, None)
                for h in self._hier.values():
                    h.remove((snap.pool, rid))
        self._stale = tuple(stale)
        for snap in fresh:
            if snap.replica_id not in self._latest:
                continue
            for metric, summary in snap.summaries.items():
                if metric in self._hier and summary.n:
                    # snapshots are immutable by contract: no copy
                    self._hier[metric].put((snap.pool, snap.replica_id), summary, copy=False)
        self._fit_cascade(fresh)

    def _fit_cascade(self, fresh: Sequence[ReplicaSnapshot]) -> None:
        rows = []
        for s in fresh:
            itl, pre = s.recent.get(ITL), s.recent.get(PREFILL_STEP)
            if itl is None or pre is None or itl.std <= 0 or pre.std <= 0:
                continue
            rows.append(
                (pre.std, min(max(s.kv_usage, 0.0), 1.0), max(s.batch.heterogeneity, 1.0), itl.std)
            )
        if rows:
            a = np.asarray(rows)
            self.cascade.update(a[:, 0], a[:, 1], a[:, 2], a[:, 3])

    # ---- views -----------------------------------------------------------------------
    def _build_view(self, now_s: float) -> ClusterView:
        by_pool: dict[str, list[ReplicaSnapshot]] = {p.name: [] for p in self.config.pools}
        for snap in self._latest.values():
            by_pool[snap.pool].append(snap)
        if now_s - self._merged_t >= MERGE_PERIOD_S or now_s >= self._next_solve_s:
            self._merged_t = now_s
            self._pool_metrics = {
                name: {
                    m: _level(h.summary((name,)))
                    for m, h in self._hier.items()
                    if name in h.children()
                }
                for name in by_pool
            }
            self._cluster_metrics = {
                m: _level(h.summary()) for m, h in self._hier.items() if h.summary().n
            }
        pools: dict[str, PoolView] = {}
        for name, snaps in by_pool.items():
            pools[name] = PoolView(
                name=name,
                replicas=tuple(sorted(s.replica_id for s in snaps)),
                running=sum(s.running for s in snaps),
                waiting=sum(s.waiting for s in snaps),
                kv_usage=float(np.mean([s.kv_usage for s in snaps])) if snaps else 0.0,
                itl_sigma_s=_mean_recent(snaps, ITL, "std"),
                prefill_sigma_s=_mean_recent(snaps, PREFILL_STEP, "std"),
                arrival_rate_per_s=sum(self._rates.get(s.replica_id, 0.0) for s in snaps),
                metrics=self._pool_metrics.get(name, {}),
            )
        return ClusterView(
            time_s=now_s,
            pools=pools,
            cluster=self._cluster_metrics,
            cascade=self.cascade.coefficients,
            stale_replicas=self._stale,
        )

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
        telemetry = self._pool_telemetry(view)
        if telemetry is None:
            self._set_static(view, "not enough telemetry: a pool has no fresh snapshot")
            return
        classes = self.config.slos.classes
        measured = class_load if class_load is not None else self.traffic.loads()
        loads = [
            measured.get(c.name) or ClassLoad(rate_per_s=self._completion_rate() / len(classes))
            for c in classes
        ]
        try:
            if self._problem is None:
                self._problem = RoutingProblem(
                    self._pool_specs(telemetry), self._class_specs(loads)
                )
            inputs = problem_inputs(
                loads,
                telemetry,
                w_gpu=opt.w_gpu,
                w_mem=opt.w_mem,
                w_net=opt.w_net,
                rho_max=opt.rho_max,
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
                    self._pool_specs(telemetry),
                    self._class_specs(loads),
                    cost_weight=self.config.optimizer.w_cost,
                )
                self._allocator = Allocator(
                    problem,
                    HysteresisConfig(
                        up_cooldown_s=loops.allocation_cooldown_s / 2,
                        down_cooldown_s=loops.allocation_cooldown_s,
                    ),
                )
            result = self._allocator.decide(inputs, now_s)
        except (ValueError, ArithmeticError) as exc:
            self._routing_reason += f"; allocation skipped: {exc}"
            return
        self.allocation = result
        for pool, n in zip(self.config.pools, np.asarray(result.replicas), strict=True):
            self._targets[pool.name] = int(n)

    def _set_static(self, view: ClusterView, reason: str) -> None:
        self._routing = self._static_routing(view)
        self._routing_status = SolveStatus.STATIC
        self._routing_reason = reason

    def _completion_rate(self) -> float:
        """Requests/s completing across the cluster, from the replicas' cumulative
        ``completed`` counters between their last two snapshots."""
        return max(sum(self._rates.get(r, 0.0) for r in self._latest), 1e-3)

    def _pool_telemetry(self, view: ClusterView) -> list[PoolTelemetry] | None:
        out = []
        for pool in self.config.pools:
            snaps = [s for s in self._latest.values() if s.pool == pool.name]
            itl = view.pools[pool.name].metrics.get(ITL)
            if not snaps or itl is None or not math.isfinite(itl.p50):
                return None
            step = view.pools[pool.name].metrics.get(STEP)
            itl_h = self._hier[ITL].summary((pool.name,))
            pre = [s.recent[PREFILL_STEP] for s in snaps if PREFILL_STEP in s.recent]
            pre_cv = float(np.mean([p.std / p.mean for p in pre if p.mean > 0])) if pre else 0.3
            overrides: Mapping[str, Any] = pool.engine_overrides
            out.append(
                PoolTelemetry(
                    replicas=len(snaps),
                    itl_p10_s=float(itl_h.quantile(0.1)),
                    itl_sigma_s=_mean_recent(snaps, ITL, "std") or itl.std,
                    step_sigma_s=step.std
                    if step is not None and math.isfinite(step.std)
                    else itl.std,
                    prefill_s_per_token=float(np.mean([s.prefill_s_per_token for s in snaps])),
                    prefill_cv=pre_cv if math.isfinite(pre_cv) else 0.3,
                    kv_blocks_per_replica=int(np.mean([s.kv_blocks_total for s in snaps])),
                    block_size=snaps[0].block_size,
                    batch_size=int(overrides.get("max_num_seqs", self.config.model.max_num_seqs)),
                )
            )
        return out

    def _pool_specs(self, telemetry: Sequence[PoolTelemetry]) -> list[PoolSpec]:
        return [
            PoolSpec(
                name=p.name,
                gpu_type=p.accelerator,
                tp_size=p.tp_size,
                min_replicas=p.min_replicas,
                max_replicas=p.max_replicas,
                capacity_tokens_per_s=t.batch_size / max(t.itl_p10_s, 1e-6),
                kv_blocks=max(t.kv_blocks_per_replica, 1),
                interconnect=p.interconnect,
                gpu_cost_per_hour=p.gpu_cost_per_hour,
            )
            for p, t in zip(self.config.pools, telemetry, strict=True)
        ]

    def _class_specs(self, loads: Sequence[ClassLoad]) -> list[ClassSpec]:
        return [
            ClassSpec(
                name=c.name,
                # a deployment's classes set tpot_s (SloConfig), so the target exists
                slo_s=c.e2e_target_s(load.output_tokens) or math.nan,
                quantile=c.quantile,
                tail_factor=None
                if self.config.optimizer.tail == "cantelli"
                else gaussian_kappa(c.quantile),
                prompt_tokens=load.prompt_tokens,
                output_tokens=max(load.output_tokens, 1.0),
            )
            for c, load in zip(self.config.slos.classes, loads, strict=True)
        ]


def _mean_recent(snaps: Sequence[ReplicaSnapshot], metric: str, field: str) -> float:
    vals = [getattr(s.recent[metric], field) for s in snaps if metric in s.recent]
    return float(np.mean(vals)) if vals else 0.0


def _normalise(weights: dict[str, float]) -> dict[str, float]:
    clean = {k: max(v, 0.0) for k, v in weights.items()}
    total = sum(clean.values())
    if total <= 0:
        return {k: 1.0 / len(clean) for k in clean}
    return {k: v / total for k, v in clean.items()}
