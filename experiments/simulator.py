"""The cluster simulator: a discrete-event loop in virtual time over engine models.

Pools of ``EngineModel`` replicas (one perf model per pool) serve a ``Trace``.
Every arrival's decision is the ``orchestrator.gateway.Gateway``'s (``route``:
class → pool → hold / spill → admission → replica ranking), on a virtual clock,
fed the replicas' ``ReplicaSnapshot``s (refreshed every ``snapshot_period_s`` of
virtual time, as on Ray) and the simulator's in-flight counts; the loop itself
decides nothing.

* A baseline policy is a gateway without pools or admission around its router
  (``policies`` or ``experiments.baselines``): one deployment of every replica,
  as stock Ray Serve runs it.
* The ``cascade`` policy with a config file (``experiments.cascade_stack``) is
  the config's gateway plus the controller core, stepped every
  ``controller_period_s`` with full snapshots and the gateway's per-class
  arrivals; its Plan splits pools and holds, its cascade fit reaches the
  gateway's predictors.

Events: arrivals (read in order from the trace arrays, not queued), step ends
(a heap keyed by (time, sequence)), controller ticks. A replica runs steps back
to back while it has work (``begin_step`` → ``end_step``), exactly like the
engine loop of vLLM. Everything random comes from generators derived from
``seed`` (one per replica, one for routing), so a run is deterministic for a
seed, and different policies see the same arrivals and the same step-time
noise streams (common random numbers).

Shared cores (``setup.core_sharing``, ``replicas.core_sharing``): each step of
an engine is stretched by the busy engines of its core group at the step's
start (and by the requests running host-wide, ``per_stream``); when an engine
starts or stops (or that count changes), the busy engines' fast-forwarded runs
are cut at their next step boundary, so their following steps see the change.

Per-request outcomes are kept in numpy arrays (no per-token objects); the
engines keep a per-step log. ``SimResult.metrics`` are computed by
``experiments.metrics.summarize``, plus ``kv_hit_rate`` (prompt tokens served
from the prefix cache / prompt tokens of requests with prefix hashes).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from experiments.baselines import make_router
from experiments.cascade_stack import StackBuilder
from experiments.client import ClientMaxTokens
from experiments.metrics import RequestLog, summarize
from experiments.sim_config import SimSetup
from orchestrator.calibration import Outcome
from orchestrator.gateway import Gateway
from orchestrator.traces import Trace
from replicas.core_sharing import CoreGroups
from replicas.engine_model import EngineModel
from replicas.telemetry import RequestInfo

_STEP, _CTRL = 0, 1
MAX_TOKENS_CAP = 4096  # the default client's max_tokens (experiments.client)


class VirtualClock:
    """The simulator's clock, injected into the gateway: ``clock()`` is ``now``."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


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


def client_caps(
    trace: Trace, seed: int, client: ClientMaxTokens | None = None
) -> NDArray[np.int64]:
    """The ``max_tokens`` the clients send for ``trace``'s requests in a run of
    ``seed`` (every policy sees the same); the engines generate
    ``min(output_tokens, caps)`` tokens."""
    return (client or ClientMaxTokens()).draw(trace.output_tokens, np.random.default_rng([seed, 3]))


def simulate(
    setup: SimSetup,
    trace: Trace,
    policy: str,
    *,
    seed: int = 0,
    stack: StackBuilder | None = None,
    progress: Callable[[float], None] | None = None,
    fast_forward: bool = True,
    client: ClientMaxTokens | None = None,
) -> SimResult:
    """Run ``trace`` through ``setup`` with router ``policy``, or with the stack
    ``stack`` builds (controller + gateway); see module docstring.
    ``fast_forward=False`` makes every engine step its own event (slower; the
    same model, different but equally seeded noise draws). ``client``: what
    clients send as ``max_tokens`` (``experiments.client``; default a fixed
    4,096); an answer longer than its cap is cut there, as an engine does.
    Every completion's outcome reaches the gateway (``on_completed``), which
    learns output lengths and scores its predictions (``metrics["coverage"]``)."""
    wall0 = time.perf_counter()
    engines = build_engines(setup, seed, fast_forward=fast_forward)
    oracle = policy == "oracle"
    rng = np.random.default_rng([seed, 1 << 20])
    clock = VirtualClock()
    cascade = stack(rng, clock) if stack is not None else None
    if cascade is not None:
        gateway = cascade.gateway
    else:
        gateway = Gateway(
            slos=setup.slos, router=make_router(policy, engines), rng=rng, clock=clock
        )
    n = len(trace)
    arr = trace.arrival_s.tolist()
    prompts = trace.prompt_tokens.tolist()
    caps_arr = client_caps(trace, seed, client)
    true_out = np.minimum(trace.output_tokens, caps_arr)  # the engine stops at max_tokens
    outs = true_out.tolist()
    caps = caps_arr.tolist()
    hashes = trace.hashes
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    replica_of = np.full(n, -1, dtype=np.int64)
    preempt = np.zeros(n, dtype=np.int64)
    ids = [e.replica_id for e in engines]
    index_of = {rid: k for k, rid in enumerate(ids)}
    outstanding = dict.fromkeys(ids, 0)
    inflight: dict[int, RequestInfo] = {}
    period = setup.snapshot_period_s
    snaps = [e.snapshot(0.0, full=False) for e in engines]
    gateway.set_snapshots(snaps)
    snap_t = [0.0] * len(engines)
    next_refresh = period
    heap: list[tuple[float, int, int, int]] = []
    seq = 0
    if cascade is not None:
        heap.append((setup.controller_period_s, -1, _CTRL, 0))
    slo_names = [c.name for c in setup.slos.classes]
    slo_index = np.zeros(n, dtype=np.int64)
    rejected_admission = 0
    deferred = 0
    events = 0
    i = 0
    tick = max(1, n // 100)

    sharing = setup.core_sharing
    groups = CoreGroups(sharing, len(engines)) if sharing and sharing.active else None
    seq_caps = [e.config.max_num_seqs for e in engines]
    track_streams = groups is not None and sharing is not None and sharing.tracks_streams

    def start(k: int, t: float, horizon: float) -> None:
        """Begin engine k's next step (or run) at t, or mark it idle."""
        nonlocal seq
        e = engines[k]
        if groups is not None:
            e.steptime.scale = groups.stretch(k)
        d = e.begin_step(t, horizon)
        busy[k] = d is not None
        if d is None:
            due[k] = math.inf
        else:
            seq += 1
            due[k] = t + d
            heapq.heappush(heap, (t + d, seq, _STEP, k))
        if groups is not None:
            for j in groups.set_busy(k, busy[k]):
                cut(j, t)

    def restream(t: float, skip: int) -> None:
        """Requests running host-wide changed: every other busy engine's run is
        cut, so its next step sees the new stretch (``per_stream``, or the host
        model's ``stream_cost``)."""
        assert groups is not None
        streams = sum(min(outstanding[r], c) for r, c in zip(ids, seq_caps, strict=True))
        if streams != groups.streams:
            groups.streams = streams
            for j in groups.busy():
                if j != skip:
                    cut(j, t)

    def cut(k: int, t: float) -> None:
        """End engine k's fast-forwarded run at its first step boundary from t."""
        nonlocal seq
        end = engines[k].interrupt(t)
        if end is not None:
            seq += 1
            due[k] = end
            heapq.heappush(heap, (end, seq, _STEP, k))

    busy = [False] * len(engines)
    busy_arrivals = [0.0] * len(engines)
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
                    outcome = Outcome(r.first_token_s - arr[j], r.finish_s - arr[j], r.output)
                    gateway.on_completed(ids[k], inflight.pop(j), outcome)
                if track_streams:
                    restream(t, skip=k)
                start(k, t, arr[i] if i < n else math.inf)
            else:
                if cascade is not None:
                    clock.now = t
                    cascade.tick(t, [e.snapshot(t, full=True) for e in engines])
                if i < n or any(busy):
                    heapq.heappush(heap, (t + setup.controller_period_s, -1, _CTRL, 0))
            continue
        if i >= n:
            break
        # ---- an arrival -------------------------------------------------------------
        t = arr[i]
        clock.now = t
        events += 1
        if i == n - 1:  # busy time while requests arrive (steady state, no drain)
            busy_arrivals = [e.busy_s for e in engines]
        if t >= next_refresh:
            for k, e in enumerate(engines):
                if t - snap_t[k] >= period:
                    snaps[k] = e.snapshot(t, full=False)
                    snap_t[k] = t
            next_refresh = t + period
            gateway.set_snapshots(snaps)
        info = RequestInfo(
            request_id=str(i),
            prompt_tokens=prompts[i],
            max_tokens=caps[i],
            predicted_output_tokens=float(outs[i]) if oracle else None,
            prefix_hashes=hashes[i] if hashes else (),
            arrival_s=t,
        )
        decision, view, order = gateway.route(info, outstanding)
        info = decision.request
        if len(slo_names) > 1:
            slo_index[i] = slo_names.index(info.slo_class)
        if not order or view is None:
            # a deferral is a miss too (the simulated client does not retry),
            # counted apart from outright rejections
            if decision.admission.defer:
                deferred += 1
            else:
                rejected_admission += 1
            i += 1
            continue
        k = index_of[view.replica_ids[order[0]]]
        e = engines[k]
        if e.add_request(info, t, output_tokens=outs[i], idx=i) is not None:
            replica_of[i] = k
            outstanding[ids[k]] += 1
            inflight[i] = info
            gateway.on_routed(ids[k], info)
            if track_streams:
                restream(t, skip=k)
            if not busy[k]:
                start(k, t, arr[i + 1] if i + 1 < n else math.inf)
            else:
                cut(k, t)
        i += 1
        if progress is not None and i % tick == 0:
            progress(i / n)

    log = RequestLog(arrival_s=trace.arrival_s.copy(), first_token_s=first, finish_s=finish,
                     output_tokens=true_out, replica=replica_of,
                     preemptions=preempt)  # fmt: skip
    itl_v = np.concatenate([np.frombuffer(e.log_dur, dtype=np.float64) for e in engines])
    itl_w = np.concatenate([np.frombuffer(e.log_decodes, dtype=np.int64) for e in engines])
    metrics = summarize(
        log,
        slos=setup.slos.classes,
        slo_index=slo_index if len(slo_names) > 1 else None,
        gpus=setup.gpus,
        busy_s=np.asarray([e.busy_s for e in engines]),
        busy_arrivals_s=np.asarray(busy_arrivals),
        kv_block_s=np.asarray([e.kv_block_s for e in engines]),
        kv_blocks=np.asarray([float(e.config.num_blocks) for e in engines]),
        itl_values=itl_v,
        itl_weights=itl_w.astype(np.float64),
        preemptions=sum(e.preemptions for e in engines),
        rejected=rejected_admission + sum(e.rejected for e in engines),
        deferred=deferred,
        window_s=setup.window_s,
        recomputed_tokens=sum(e.recomputed_tokens for e in engines),
        cancelled_output_tokens=sum(e.aborted_generated_tokens for e in engines),
        prefix_hit_tokens=sum(e.prefix_hit_tokens for e in engines),
        prefix_query_tokens=sum(e.prefix_query_tokens for e in engines),
    )
    wall = time.perf_counter() - wall0
    metrics = {"policy": policy, **metrics, **gateway.predictor.calibration.report(),
               "events": events, "wall_s": wall}  # fmt: skip
    metrics["events_per_s"] = events / wall if wall > 0 else math.inf
    # prefix-cache hit rate: prompt tokens served from cache / prompt tokens of
    # requests that carried prefix hashes (NaN: the trace has none)
    query = sum(e.prefix_query_tokens for e in engines)
    hit = sum(e.prefix_hit_tokens for e in engines)
    metrics["kv_hit_rate"] = hit / query if query else math.nan
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
    stack_factory: Callable[[str], StackBuilder | None] | None = None,
    client: ClientMaxTokens | None = None,
) -> list[SimResult]:
    """Run several policies on the same arrivals and seeds. ``stack_factory(name)``
    gives a policy its controller + gateway stack (``experiments.cascade_stack``)
    or None (router only)."""
    out = []
    for name in policies:
        cb = (lambda f, name=name: progress(name, f)) if progress is not None else None
        stack = stack_factory(name) if stack_factory is not None else None
        out.append(simulate(setup, trace, name, seed=seed, progress=cb, stack=stack, client=client))
    return out
