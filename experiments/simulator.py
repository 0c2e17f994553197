"""The cluster simulator: a discrete-event loop in virtual time over engine models.

Pools of ``EngineModel`` replicas (one perf model per pool) serve a ``Trace``. The
same decision code as on Ray plugs in through the same interfaces:

* a router with ``rank(request, view, rng) -> list[int]`` and the
  ``on_routed`` / ``on_completed`` hooks (``policies`` or ``experiments.baselines``),
  fed a ``policies`` ``ReplicaView`` built from the replicas' ``ReplicaSnapshot``s
  (refreshed every ``snapshot_period_s`` of virtual time, as on Ray) plus the
  router's own in-flight counts;
* an optional admission policy (``admit(request, view, now_s) -> bool``);
* an optional controller (``step(now_s, snapshots) -> Plan``, e.g.
  ``orchestrator.controller.Controller``) called every ``controller_period_s``;
  its ``Plan.routing[class][pool]`` weights split arrivals between pools before
  the router ranks the chosen pool's replicas.

Events: arrivals (read in order from the trace arrays, not queued), step ends
(a heap keyed by (time, sequence)), controller ticks. A replica runs steps back
to back while it has work (``begin_step`` → ``end_step``), exactly like the
engine loop of vLLM. Everything random comes from generators derived from
``seed`` (one per replica, one for routing), so a run is deterministic for a
seed, and different policies see the same arrivals and the same step-time
noise streams (common random numbers).

Per-request outcomes are kept in numpy arrays (no per-token objects); the
engines keep a per-step log. ``SimResult.metrics`` are computed by
``experiments.metrics.summarize``.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from experiments.baselines import make_router
from experiments.metrics import RequestLog, summarize
from experiments.sim_config import SimSetup
from experiments.traces import Trace
from replicas.engine_model import EngineModel
from replicas.telemetry import ReplicaSnapshot, RequestInfo

_STEP, _CTRL = 0, 1
MAX_TOKENS_CAP = 4096  # what clients ask for as max_tokens (the true length is hidden)


class AdmissionLike(Protocol):
    def admit(self, request: RequestInfo, view: Any, now_s: float) -> bool: ...


class ControllerLike(Protocol):
    def step(self, now_s: float, snapshots: list[ReplicaSnapshot]) -> Any: ...


@dataclass(frozen=True)
class SimResult:
    """One policy's run: metrics, the raw per-request log, and P99 per window."""

    policy: str
    metrics: dict[str, Any]
    log: RequestLog
    events: int
    wall_s: float


def build_engines(setup: SimSetup, seed: int, *, fast_forward: bool = True) -> list[EngineModel]:
    """One engine per replica; replica k's step noise comes from SeedSequence (seed, k).
    ``fast_forward``: engines cover runs of identical decode steps in one event."""
    engines = []
    k = 0
    for pool in setup.pools:
        perf = pool.perf_model()
        cfg = pool.engine_config()
        for j in range(pool.replicas):
            rng = np.random.default_rng([seed, k])
            engines.append(
                EngineModel(
                    f"{pool.name}-{j}", pool.name, perf, cfg, rng,
                    accelerator=pool.accelerator, fast_forward=fast_forward,
                )
            )  # fmt: skip
            k += 1
    return engines


def _build_view(snaps: list[ReplicaSnapshot], outstanding: dict[str, int], now: float) -> Any:
    import policies
    from policies.view import build_view

    build: Callable[..., Any] = getattr(policies, "build_view", build_view)
    return build(snaps, outstanding, now)


def simulate(
    setup: SimSetup,
    trace: Trace,
    policy: str,
    *,
    seed: int = 0,
    admission: AdmissionLike | None = None,
    controller: ControllerLike | None = None,
    progress: Callable[[float], None] | None = None,
    fast_forward: bool = True,
) -> SimResult:
    """Run ``trace`` through ``setup`` with router ``policy``; see module docstring.
    ``fast_forward=False`` makes every engine step its own event (slower; the
    same model, different but equally seeded noise draws)."""
    wall0 = time.perf_counter()
    engines = build_engines(setup, seed, fast_forward=fast_forward)
    router = make_router(policy, engines)
    oracle = policy == "oracle"
    rng = np.random.default_rng([seed, 1 << 20])
    n = len(trace)
    arr = trace.arrival_s.tolist()
    prompts = trace.prompt_tokens.tolist()
    outs = trace.output_tokens.tolist()
    hashes = trace.hashes
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    replica_of = np.full(n, -1, dtype=np.int64)
    preempt = np.zeros(n, dtype=np.int64)
    ids = [e.replica_id for e in engines]
    pool_of = [e.pool for e in engines]
    outstanding = dict.fromkeys(ids, 0)
    inflight: dict[int, RequestInfo] = {}
    period = setup.snapshot_period_s
    snaps = [e.snapshot(0.0, full=False) for e in engines]
    snap_t = [0.0] * len(engines)
    next_refresh = period
    view: Any = None
    pool_members: dict[str, list[int]] = {}
    for k, p in enumerate(pool_of):
        pool_members.setdefault(p, []).append(k)
    heap: list[tuple[float, int, int, int]] = []
    seq = 0
    plan: Any = None
    if controller is not None:
        heap.append((setup.controller_period_s, -1, _CTRL, 0))
    rejected_admission = 0
    events = 0
    i = 0
    tick = max(1, n // 100)

    def start(k: int, t: float, horizon: float) -> None:
        nonlocal seq
        d = engines[k].begin_step(t, horizon)
        busy[k] = d is not None
        if d is not None:
            seq += 1
            due[k] = t + d
            heapq.heappush(heap, (t + d, seq, _STEP, k))

    busy = [False] * len(engines)
    due = [math.inf] * len(engines)  # the valid end time of each replica's step event
    while True:
        if heap and (i >= n or heap[0][0] <= arr[i]):
            t, _, kind, k = heapq.heappop(heap)
            events += 1
            if kind == _STEP:
                if t != due[k]:
                    continue  # superseded: the run was cut by an arrival
                e = engines[k]
                for r in e.end_step(t):
                    j = r.idx
                    first[j] = r.first_token_s
                    finish[j] = r.finish_s
                    preempt[j] = r.preemptions
                    outstanding[ids[k]] -= 1
                    router.on_completed(ids[k], inflight.pop(j))
                d = e.begin_step(t, arr[i] if i < n else math.inf)
                if d is None:
                    busy[k] = False
                    due[k] = math.inf
                else:
                    seq += 1
                    due[k] = t + d
                    heapq.heappush(heap, (t + d, seq, _STEP, k))
            else:
                if controller is not None:
                    plan = controller.step(t, [e.snapshot(t, full=True) for e in engines])
                if i < n or any(busy):
                    heapq.heappush(heap, (t + setup.controller_period_s, -1, _CTRL, 0))
            continue
        if i >= n:
            break
        # ---- an arrival -------------------------------------------------------------
        t = arr[i]
        events += 1
        if t >= next_refresh:
            for k, e in enumerate(engines):
                if t - snap_t[k] >= period:
                    snaps[k] = e.snapshot(t, full=False)
                    snap_t[k] = t
            next_refresh = t + period
            view = None
        info = RequestInfo(
            request_id=str(i),
            prompt_tokens=prompts[i],
            max_tokens=max(MAX_TOKENS_CAP, outs[i]),
            predicted_output_tokens=float(outs[i]) if oracle else None,
            prefix_hashes=hashes[i] if hashes else (),
            arrival_s=t,
        )
        cand = list(range(len(engines)))
        if plan is not None and getattr(plan, "routing", None):
            weights = plan.routing.get(info.slo_class) or next(iter(plan.routing.values()))
            names = [p for p in weights if p in pool_members and weights[p] > 0]
            if names:
                w = np.asarray([weights[p] for p in names])
                cand = pool_members[names[int(rng.choice(len(names), p=w / w.sum()))]]
        sub_snaps = snaps if len(cand) == len(engines) else [snaps[k] for k in cand]
        if view is None or len(cand) != len(engines):
            v = _build_view(sub_snaps, outstanding, t)
            if len(cand) == len(engines):
                view = v
        else:
            v = view.with_outstanding(outstanding)
        if admission is not None and not admission.admit(info, v, t):
            rejected_admission += 1
            i += 1
            continue
        order = router.rank(info, v, rng)
        if not order:
            rejected_admission += 1
            i += 1
            continue
        k = cand[order[0]]
        e = engines[k]
        if e.add_request(info, t, output_tokens=outs[i], idx=i) is not None:
            replica_of[i] = k
            outstanding[ids[k]] += 1
            inflight[i] = info
            router.on_routed(ids[k], info)
            if not busy[k]:
                start(k, t, arr[i + 1] if i + 1 < n else math.inf)
            else:
                cut = e.interrupt(t)
                if cut is not None:
                    seq += 1
                    due[k] = cut
                    heapq.heappush(heap, (cut, seq, _STEP, k))
        i += 1
        if progress is not None and i % tick == 0:
            progress(i / n)

    log = RequestLog(arrival_s=trace.arrival_s.copy(), first_token_s=first, finish_s=finish,
                     output_tokens=trace.output_tokens.copy(), replica=replica_of,
                     preemptions=preempt)  # fmt: skip
    itl_v = np.concatenate([np.frombuffer(e.log_dur, dtype=np.float64) for e in engines])
    itl_w = np.concatenate([np.frombuffer(e.log_decodes, dtype=np.int64) for e in engines])
    metrics = summarize(
        log,
        slo=setup.slo,
        gpus=setup.gpus,
        busy_s=np.asarray([e.busy_s for e in engines]),
        kv_block_s=np.asarray([e.kv_block_s for e in engines]),
        kv_blocks=np.asarray([float(e.config.num_blocks) for e in engines]),
        itl_values=itl_v,
        itl_weights=itl_w.astype(np.float64),
        preemptions=sum(e.preemptions for e in engines),
        rejected=rejected_admission + sum(e.rejected for e in engines),
        window_s=setup.window_s,
    )
    wall = time.perf_counter() - wall0
    metrics = {"policy": policy, **metrics, "events": events, "wall_s": wall}
    metrics["events_per_s"] = events / wall if wall > 0 else math.inf
    return SimResult(policy, metrics, log, events, wall)


def measure_capacity(setup: SimSetup, trace: Trace, *, seed: int = 0, sample: int = 400) -> float:
    """The cluster's measured capacity (requests/s) for this trace's request mix.

    Each pool's replica is saturated with ``sample`` requests drawn from the trace
    (all queued at t = 0) and its completion rate over the run is measured; the
    cluster's capacity is the sum over replicas. Loads are fractions of this.
    """
    rng = np.random.default_rng([seed, 7])
    pick = rng.choice(len(trace), size=min(sample, len(trace)), replace=False)
    total = 0.0
    for pool in setup.pools:
        eng = EngineModel("cap", pool.name, pool.perf_model(), pool.engine_config(),
                          np.random.default_rng([seed, 8]))  # fmt: skip
        for j in pick:
            info = RequestInfo(str(j), int(trace.prompt_tokens[j]), MAX_TOKENS_CAP + 100000)
            eng.add_request(info, 0.0, output_tokens=int(trace.output_tokens[j]))
        t = 0.0
        while eng.has_work:
            d = eng.begin_step(t)
            if d is None:
                break
            t += d
            eng.end_step(t)
        if eng.completed == 0 or t <= 0:
            raise ValueError(f"pool {pool.name!r}: no request of the trace fits a replica")
        total += pool.replicas * eng.completed / t
    return total


def run_policies(
    setup: SimSetup,
    trace: Trace,
    policies: list[str],
    *,
    seed: int = 0,
    progress: Callable[[str, float], None] | None = None,
    admission: AdmissionLike | None = None,
    stack_factory: Callable[[str], tuple[ControllerLike | None, AdmissionLike | None]]
    | None = None,
) -> list[SimResult]:
    """Run several policies on the same arrivals and seeds. ``stack_factory(name)``
    gives a policy its own controller and admission (``experiments.cascade_stack``);
    ``admission`` applies to policies it gives none."""
    out = []
    for name in policies:
        cb = (lambda f, name=name: progress(name, f)) if progress is not None else None
        ctrl, adm = stack_factory(name) if stack_factory is not None else (None, None)
        out.append(simulate(setup, trace, name, seed=seed, progress=cb,
                            admission=adm or admission, controller=ctrl))  # fmt: skip
    return out
