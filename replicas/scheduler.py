"""The engine model's scheduler: vLLM v1's ``Scheduler`` in virtual time.

``begin_step`` follows vLLM v1's ``Scheduler.schedule()``:

1. **Running requests first** (decode first), in order: each asks for
   ``num_tokens − num_computed`` new tokens (1 for a decode; the rest of the
   prompt for a chunked prefill), capped by the step's remaining token budget
   (``max_num_batched_tokens``). Its KV slots are allocated; when blocks run out the
   *last* running request is preempted (by recompute: its blocks are freed, its
   computed tokens reset to 0, it goes to the front of the waiting queue), and the
   allocation is retried.
2. **Waiting requests** (FCFS), only if nothing was preempted in this step and
   while ``max_num_seqs`` allows: a request first takes its cached prefix (prefix
   caching), then schedules as much of its prompt as the budget allows (chunked
   prefill). A request that cannot get blocks blocks the queue (FCFS).

``end_step`` is ``update_from_output``: a request whose computed tokens reach
``prompt + generated`` at the end of a step emits one token; output lengths are
given (the simulator knows the trace's). Fast-forward (``begin_step`` with
``fast_forward``): a run of alike decode-only steps is scheduled at once.

Blocks come from the ``KVCacheManager`` (``replicas.kv_cache``), step durations
from the ``StepTimeSampler`` (``replicas.step_time``), and latency samples go to
``EngineTelemetry`` (``replicas.engine_telemetry``). ``EngineModel``
(``replicas.engine_model``) adds intake and snapshots.

Invariants (tested through ``EngineModel``): a step never schedules more than
``max_num_batched_tokens`` tokens nor more than ``max_num_seqs`` sequences; every
admitted request finishes (preemptions are counted).

Wasted compute (tested): ``recomputed_tokens`` counts tokens computed again after
a preemption discarded their KV (each request remembers the most tokens it ever
had computed; prefix-cache hits on resumption cost nothing and are not counted),
so tokens scheduled = Σ(prompt + output − 1) − prefix hits + ``recomputed_tokens``;
``aborted_generated_tokens`` counts the output tokens of requests then aborted.
"""

from __future__ import annotations

import math
from array import array
from collections import deque

import numpy as np

from replicas.decode_run import DecodeRun
from replicas.engine_config import EngineConfig
from replicas.engine_telemetry import EngineTelemetry
from replicas.kv_cache import KVCacheManager
from replicas.perf_model import PerfModel
from replicas.prefill_budget import PrefillBudget
from replicas.sim_request import SimRequest
from replicas.step_time import StepTimeSampler
from replicas.telemetry import E2E, PREFILL_STEP, QUEUE_WAIT, STEP, TTFT


class Scheduler:
    """Queues, step scheduling and step completion of one replica (module docstring).

    Args:
        perf: the step-time model of this replica's (model, GPU, TP).
        config: engine settings.
        rng: the injected generator for step-time draws (seeded by the caller).
        collect_tokens: keep the list of requests that emitted a token in the last
            step (``last_emitted``), for streaming (``SimEngine``); the DES leaves it off.
        fast_forward: let ``begin_step`` cover a run of identical decode-only steps
            at once (see ``begin_step``); the DES turns it on, ``SimEngine`` does not.
    """

    def __init__(
        self,
        perf: PerfModel,
        config: EngineConfig,
        rng: np.random.Generator,
        *,
        collect_tokens: bool = False,
        fast_forward: bool = False,
    ) -> None:
        self.perf = perf
        self.config = config
        self.steptime = StepTimeSampler(perf, rng, overhead_s=config.step_overhead_s)
        self.kv = KVCacheManager(
            config.num_blocks, config.block_size, config.prefix_unit_tokens, config.kv_eviction
        )
        self.telemetry = EngineTelemetry(config.recent_halflife, config.fold_interval_s)
        self.collect_tokens = collect_tokens
        self.fast_forward = fast_forward
        self._run = DecodeRun()  # the fast-forwarded run in progress, if any
        self.prefill: PrefillBudget | None = None
        if config.prefill_tpot_slo_s is not None:
            self.prefill = PrefillBudget(
                config.prefill_tpot_slo_s,
                config.max_num_batched_tokens,
                min_tokens=min(config.prefill_min_tokens, config.max_num_batched_tokens),
            )
        self.last_emitted: list[SimRequest] = []
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self._scheduled: list[tuple[SimRequest, int]] = []
        self._aborts: set[str] = set()
        self._step_start = -1.0
        self._prev_step_end = -1.0
        # counters
        self.preemptions = 0
        self.completed = 0
        self.rejected = 0
        self.steps = 0
        self.busy_s = 0.0
        self.kv_block_s = 0.0  # ∫ used blocks dt (for the mean KV usage)
        self.prefix_hit_tokens = 0
        self.prefix_query_tokens = 0
        # wasted compute: tokens computed again after a preemption threw their KV
        # away (prefix-cache hits on resumption are not recomputed, not counted);
        # output tokens generated for requests that were then aborted
        self.recomputed_tokens = 0
        self.aborted_generated_tokens = 0
        self.last_step_tokens = 0
        self.last_step_seqs = 0
        self.last_prefill_tokens = 0
        self.last_decode_seqs = 0
        # per-step log for the simulator's metrics (duration, decode sequences)
        self.log_dur = array("d")
        self.log_decodes = array("l")

    def abort(self, request_id: str) -> bool:
        """Drop a request (client went away); frees its blocks. False if unknown.
        During a step (between ``begin_step`` and ``end_step``) it takes effect at
        the step's end."""
        if self._scheduled and any(r.request_id == request_id for r, _ in self._scheduled):
            self._aborts.add(request_id)
            return True
        for queue in (self.waiting, self.running):
            for r in queue:
                if r.request_id == request_id:
                    queue.remove(r)
                    self.kv.free(r)
                    self.aborted_generated_tokens += r.generated
                    return True
        return False

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    @property
    def kv_blocks_used(self) -> int:
        return self.kv.used

    @property
    def outstanding(self) -> int:
        return len(self.running) + len(self.waiting)

    def _preempt(self, r: SimRequest) -> None:
        if r.computed > r.peak_computed:
            r.peak_computed = r.computed
        self.kv.free(r)
        r.computed = 0
        r.n_units = 0
        r.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(r)

    # ---- stepping ----------------------------------------------------------------
    def begin_step(self, now_s: float, horizon_s: float = math.inf) -> float | None:
        """Schedule the next step at ``now_s``; return its duration (s) or None if idle.

        With ``fast_forward``, when nothing waits and every running request is
        decoding with room in its last KV block, the next k steps are all alike
        (same sequences, no allocation, no finish before the k-th): they are
        scheduled at once and the returned duration covers all k (each step still
        draws its own time). ``interrupt(t)`` cuts such a run at the first step
        boundary after t (an arrival must join at the next step, as in vLLM).
        ``horizon_s`` (the next arrival, when the caller knows it) ends a run at the
        first step boundary at or after it, so no step is drawn in vain.
        """
        self._run.k = 0
        if self.fast_forward and not self.waiting and self.running:
            d = self._begin_run(now_s, horizon_s)
            if d is not None:
                return d
        cfg = self.config
        kv = self.kv
        budget = cfg.max_num_batched_tokens
        sched = self._scheduled
        sched.clear()
        running = self.running
        preempted = False
        n_prefill = prefill_tokens = n_decode = decode_kv = 0
        prefill_work = 0.0
        prefill_left = budget  # vLLM: prefills share the one budget
        pb = self.prefill
        if pb is not None:
            decodes = [(r.generated, r.first_token_s) for r in running if r.generated > 0]
            prefill_left = pb.budget(pb.slack_s(decodes, now_s))
        i = 0
        while i < len(running) and budget > 0:
            r = running[i]
            n = r.prompt + r.generated - r.computed
            is_decode = n == 1 and r.generated > 0
            if not is_decode and n > prefill_left:
                n = prefill_left
                if n == 0:  # this step's prefill budget is spent: decodes only
                    i += 1
                    continue
            if n > budget:
                n = budget
            need = -(-(r.computed + n) // cfg.block_size) - len(r.units) * kv.unit_blocks - r.blocks
            ok = True
            while need > 0 and not kv.alloc(need):
                victim = running.pop()
                self._preempt(victim)
                preempted = True
                if victim is r:
                    ok = False
                    break
            if not ok:
                break
            if need > 0:
                r.blocks += need
            sched.append((r, n))
            budget -= n
            if n == 1 and r.generated > 0 and r.computed == r.prompt + r.generated - 1:
                n_decode += 1
                decode_kv += r.computed + 1
            else:
                n_prefill += 1
                prefill_tokens += n
                prefill_left -= n
                prefill_work += n * (r.computed + 0.5 * n)
            i += 1
        if not preempted:
            waiting = self.waiting
            while waiting and budget > 0 and prefill_left > 0 and len(running) < cfg.max_num_seqs:
                r = waiting[0]
                if r.computed == 0 and r.hashes:
                    kv.take_prefix(r)
                n = r.prompt + r.generated - r.computed
                if n > budget:
                    n = budget
                if n > prefill_left:
                    n = prefill_left
                need = kv.blocks_needed(r, n)
                if need > 0 and not kv.alloc(need):
                    if r.units:  # give the prefix back; retry later
                        kv.free(r)
                        r.computed = 0
                        r.n_units = 0
                    break
                if need > 0:
                    r.blocks += need
                waiting.popleft()
                running.append(r)
                if r.first_sched_s < 0:
                    r.first_sched_s = now_s
                    if r.hashes:
                        self.prefix_query_tokens += r.prompt
                        self.prefix_hit_tokens += r.computed
                        kv.record_lookup(r)
                    self.telemetry.pending[QUEUE_WAIT].append(now_s - r.arrival_s)
                sched.append((r, n))
                budget -= n
                prefill_left -= n
                n_prefill += 1
                prefill_tokens += n
                prefill_work += n * (r.computed + 0.5 * n)
        if not sched:
            return None
        num_tokens = cfg.max_num_batched_tokens - budget
        dur = self.steptime.step(
            num_tokens, n_prefill, prefill_tokens, prefill_work, n_decode, decode_kv
        )
        self._step_start = now_s
        self.last_step_tokens = num_tokens
        self.last_step_seqs = len(sched)
        self.last_prefill_tokens = prefill_tokens
        self.last_decode_seqs = n_decode
        return dur

    def _begin_run(self, now_s: float, horizon_s: float) -> float | None:
        end = self._run.plan(
            self.running, self.kv, self.steptime, self.config.max_num_batched_tokens, now_s,
            horizon_s,
        )  # fmt: skip
        if end is None:
            return None
        n = len(self.running)
        self._step_start = now_s
        self.last_step_tokens = n
        self.last_step_seqs = n
        self.last_prefill_tokens = 0
        self.last_decode_seqs = n
        return end - now_s

    def interrupt(self, now_s: float) -> float | None:
        """Cut a fast-forwarded run at the first step boundary at or after ``now_s``.
        Returns the run's new end time when it changed, else None (the caller's
        pending end event stays valid)."""
        return self._run.cut(now_s, self.steptime)

    def _end_run(self) -> list[SimRequest]:
        run = self._run
        k = run.k
        ends = run.ends
        start = self._step_start
        n = len(self.running)
        used = self.kv_blocks_used
        durs = [b - a for a, b in zip([start, *ends[:-1]], ends, strict=True)]
        self.log_dur.extend(durs)
        self.log_decodes.extend([n] * k)
        self.telemetry.pending[STEP].extend(durs)
        last = ends[-1]
        span = last - start
        if self.prefill is not None:  # k decode-only steps: one observation of their mean
            self.prefill.observe(0, span / k)
        self.steps += k
        self.busy_s += span
        self.kv_block_s += used * span
        self._prev_step_end = last
        finished = run.apply(self.running, start, self.telemetry)
        if finished:
            self._finish(finished)
        return finished

    def _finish(self, finished: list[SimRequest]) -> None:
        done = set(map(id, finished))
        self.running = [r for r in self.running if id(r) not in done]
        e2e = self.telemetry.pending[E2E]
        free = self.kv.free
        for r in finished:
            free(r)
            e2e.append(r.finish_s - r.arrival_s)
        self.completed += len(finished)

    def end_step(self, now_s: float) -> list[SimRequest]:
        """Finish the step (or fast-forwarded run) begun last, at ``now_s`` (its end);
        return the requests that completed in it (``finish_s`` set, blocks freed)."""
        if self._run.k:
            return self._end_run()
        dur = now_s - self._step_start
        self.steps += 1
        self.busy_s += dur
        used = self.kv_blocks_used
        self.kv_block_s += used * dur
        self.log_dur.append(dur)
        self.log_decodes.append(self.last_decode_seqs)
        tel = self.telemetry
        pending = tel.pending
        pending[STEP].append(dur)
        if self.last_prefill_tokens:
            pending[PREFILL_STEP].append(dur)
            tel.pstp.append(dur / self.last_prefill_tokens)
        if self.prefill is not None:
            self.prefill.observe(self.last_prefill_tokens, dur)
        prev_end = self._prev_step_end
        self._prev_step_end = now_s
        finished: list[SimRequest] = []
        emitted = self.last_emitted
        emitted.clear()
        collect = self.collect_tokens
        itl_v, itl_n = tel.itl_v, tel.itl_n
        register = self.kv.register_units
        same = 0
        for r, n in self._scheduled:
            before = r.computed
            r.computed += n
            if before < r.peak_computed:  # recomputing what a preemption discarded
                self.recomputed_tokens += min(r.computed, r.peak_computed) - before
            if r.hashes and r.n_units < len(r.hashes):
                register(r)
            if r.computed < r.prompt + r.generated:
                continue  # a chunk of a prefill: no token yet
            r.generated += 1
            if collect:
                emitted.append(r)
            last = r.last_token_s
            if last < 0:
                r.first_token_s = now_s
                pending[TTFT].append(now_s - r.arrival_s)
            elif last == prev_end:
                same += 1
            else:
                itl_v.append(now_s - last)
                itl_n.append(1)
            r.last_token_s = now_s
            if r.generated >= r.output:
                r.finish_s = now_s
                finished.append(r)
        if same:
            itl_v.append(now_s - prev_end)
            itl_n.append(same)
        if finished:
            self._finish(finished)
        self._scheduled.clear()
        if self._aborts:
            aborts, self._aborts = self._aborts, set()
            finished = [r for r in finished if r.request_id not in aborts]
            for rid in aborts:
                self.abort(rid)
        return finished
