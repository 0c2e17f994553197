"""A vLLM-v1-like replica in virtual time: continuous batching, paged KV, prefix cache.

The scheduler follows vLLM v1's ``Scheduler.schedule()``:

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

A request whose computed tokens reach ``prompt + generated`` at the end of a step
emits one token. Output lengths are given (the simulator knows the trace's).

Paged KV: ``num_blocks`` blocks of ``block_size`` tokens. Prefix caching works at
the granularity of the trace's prefix hashes (``prefix_unit_tokens`` tokens per
hash, 512 for Mooncake ``hash_ids``): a finished unit of a prompt is registered
under its hash and shared (ref-counted) by later requests with the same leading
hashes; when no request references it, it stays cached but evictable (LRU), and
it is evicted only when the empty blocks run out. vLLM always recomputes at least
the last prompt token, and so do we.

Time is virtual and passive: the caller asks ``begin_step(now)`` for the next step
(it returns the step's duration, a seeded draw from the ``PerfModel``, or None when
idle) and calls ``end_step(now + duration)``. The DES and the real-time ``SimEngine``
drive the same object.

Invariants (tested): KV blocks in use never exceed ``num_blocks``; a step never
schedules more than ``max_num_batched_tokens`` tokens nor more than ``max_num_seqs``
sequences; every admitted request finishes (preemptions are counted; requests that
can never fit are rejected at ``add_request``).
"""

from __future__ import annotations

import bisect
import copy
import math
from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from replicas.perf_model import PerfModel
from replicas.telemetry import (
    E2E,
    ITL,
    PREFILL_STEP,
    QUEUE_WAIT,
    STEP,
    TTFT,
    BatchComposition,
    DecayedStats,
    ReplicaSnapshot,
    RequestInfo,
)
from uncertainty import DecayedWelford, Summary

_Z_BLOCK = 4096  # standard normals drawn per refill
_SPARSE_BATCH = 16  # per-request metrics fold once this many samples are pending,
_SPARSE_LAG = 5  # or after this many fold intervals (see EngineModel._fold)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine settings (vLLM names). ``num_blocks`` is per replica (from GPU memory;
    see ``replicas.profiles.kv_blocks``). ``prefix_unit_tokens``: tokens covered by
    one prefix hash. ``recent_halflife``: samples behind the snapshot's decayed
    read-outs. ``max_advertised_prefixes``: cap on ``cached_prefix_hashes``.
    ``fold_interval_s``: pending latency samples are folded into the decayed
    estimators at most this often (0 = at every snapshot; the simulator uses 2 s
    for speed: counts and KV stay exact, latency read-outs lag by at most that;
    per-request metrics by up to 5× that when fewer than 16 samples are pending)."""

    num_blocks: int
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    enable_prefix_caching: bool = True
    prefix_unit_tokens: int = 512
    max_model_len: int | None = None
    recent_halflife: float = 200.0
    max_advertised_prefixes: int = 1024
    fold_interval_s: float = 0.0  # fold latency samples into estimators at most this often

    def __post_init__(self) -> None:
        for name in ("num_blocks", "block_size", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"engine config: {name} must be >= 1")
        if self.prefix_unit_tokens % self.block_size:
            raise ValueError("engine config: prefix_unit_tokens must be a multiple of block_size")


class SimRequest:
    """Mutable state of one request inside the engine (not a contract type)."""

    __slots__ = (
        "arrival_s", "blocks", "computed", "finish_s", "first_sched_s", "first_token_s",
        "generated", "hashes", "idx", "last_token_s", "n_units", "output", "preemptions",
        "prompt", "request_id", "units",
    )  # fmt: skip

    def __init__(
        self,
        request_id: str,
        prompt: int,
        output: int,
        hashes: tuple[int, ...],
        arrival_s: float,
        idx: int,
    ) -> None:
        self.request_id = request_id
        self.idx = idx  # the caller's index (the DES's request number), -1 if none
        self.prompt = prompt
        self.output = output
        self.hashes = hashes
        self.arrival_s = arrival_s
        self.computed = 0  # tokens whose KV is computed
        self.generated = 0  # output tokens emitted
        self.blocks = 0  # private KV blocks held
        self.units: list[int] = []  # shared prefix units held (hashes), leading
        self.n_units = 0  # prompt units this request registered or hit, leading
        self.first_sched_s = -1.0
        self.first_token_s = -1.0
        self.last_token_s = -1.0
        self.finish_s = -1.0
        self.preemptions = 0


class EngineModel:
    """One replica's scheduler + KV cache + step-time model (see module docstring).

    Args:
        replica_id, pool, accelerator: identity, copied into snapshots.
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
        replica_id: str,
        pool: str,
        perf: PerfModel,
        config: EngineConfig,
        rng: np.random.Generator,
        *,
        accelerator: str = "unknown",
        collect_tokens: bool = False,
        fast_forward: bool = False,
    ) -> None:
        self.replica_id = replica_id
        self.pool = pool
        self.accelerator = accelerator
        self.perf = perf
        self.config = config
        self._rng = rng
        self._z: list[float] = []
        self._zi = 0
        self.collect_tokens = collect_tokens
        self.fast_forward = fast_forward
        self._macro: list[float] = []  # cumulative sub-step ends of a fast-forwarded run
        self._macro_k = 0
        self.last_emitted: list[SimRequest] = []
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self._unit_blocks = config.prefix_unit_tokens // config.block_size
        self._empty = config.num_blocks  # blocks neither used nor cached
        self._active_units: dict[int, int] = {}  # hash → refcount
        self._evictable: OrderedDict[int, None] = OrderedDict()  # cached, unreferenced (LRU)
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
        self.last_step_tokens = 0
        self.last_step_seqs = 0
        self.last_prefill_tokens = 0
        self.last_decode_seqs = 0
        # per-step log for the simulator's metrics (duration, decode sequences)
        self.log_dur = array("d")
        self.log_decodes = array("l")
        self._snap: ReplicaSnapshot | None = None
        self._snap_key: tuple[int, ...] = ()
        self._fold_t = -math.inf
        self._sparse_fold_t = -math.inf  # last fold of the sparse metrics (see _fold)
        self._recent_stats: dict[str, DecayedStats] | None = None
        # telemetry: samples pending since the last snapshot, folded in lazily
        self._pending: dict[str, list[float]] = {
            m: [] for m in (QUEUE_WAIT, TTFT, STEP, PREFILL_STEP, E2E)
        }
        self._pend_itl_v: list[float] = []
        self._pend_itl_n: list[int] = []
        self._pend_pstp: list[float] = []  # prefill seconds per token, per prefill step
        h = config.recent_halflife
        self._recent = {
            m: DecayedWelford(halflife_samples=h)
            for m in (QUEUE_WAIT, TTFT, ITL, STEP, PREFILL_STEP, E2E)
        }
        self._recent_pstp = DecayedWelford(halflife_samples=h)
        self._summaries = {m: Summary() for m in (QUEUE_WAIT, TTFT, ITL, STEP, PREFILL_STEP, E2E)}

    # ---- intake ------------------------------------------------------------------
    def add_request(
        self, info: RequestInfo, now_s: float, *, output_tokens: int | None = None, idx: int = -1
    ) -> SimRequest | None:
        """Queue a request; returns its state, or None when it can never run here
        (its KV exceeds the whole cache or ``max_model_len``), counted in ``rejected``.
        ``output_tokens``: the true output length (default ``info.max_tokens``)."""
        out = (
            info.max_tokens
            if output_tokens is None
            else max(1, min(output_tokens, info.max_tokens))
        )
        total = info.prompt_tokens + out
        cfg = self.config
        if (
            info.prompt_tokens < 1
            or -(-total // cfg.block_size) > cfg.num_blocks
            or (cfg.max_model_len is not None and total > cfg.max_model_len)
        ):
            self.rejected += 1
            return None
        hashes = info.prefix_hashes if cfg.enable_prefix_caching else ()
        req = SimRequest(info.request_id, info.prompt_tokens, out, hashes, now_s, idx)
        self.waiting.append(req)
        return req

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
                    self._free(r)
                    return True
        return False

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    @property
    def kv_blocks_used(self) -> int:
        return self.config.num_blocks - self._empty - len(self._evictable) * self._unit_blocks

    @property
    def outstanding(self) -> int:
        return len(self.running) + len(self.waiting)

    # ---- KV blocks ---------------------------------------------------------------
    def _alloc(self, n: int) -> bool:
        if n <= self._empty:
            self._empty -= n
            return True
        ub = self._unit_blocks
        if n > self._empty + len(self._evictable) * ub:
            return False
        while n > self._empty:  # evict least recently used cached prefixes
            self._evictable.popitem(last=False)
            self._empty += ub
        self._empty -= n
        return True

    def _free(self, r: SimRequest) -> None:
        self._empty += r.blocks
        r.blocks = 0
        au = self._active_units
        for h in r.units:
            c = au[h] - 1
            if c:
                au[h] = c
            else:
                del au[h]
                self._evictable[h] = None
        r.units = []

    def _take_prefix(self, r: SimRequest) -> None:
        """Reference the cached leading units of ``r``'s prompt (prefix-cache hit)."""
        unit = self.config.prefix_unit_tokens
        au, ev = self._active_units, self._evictable
        hit = 0
        # at least the last prompt token is always recomputed
        for j, h in enumerate(r.hashes):
            if (j + 1) * unit >= r.prompt + r.generated:
                break
            if h in au:
                au[h] += 1
            elif h in ev:
                del ev[h]
                au[h] = 1
            else:
                break
            r.units.append(h)
            hit += 1
        r.n_units = hit
        r.computed = hit * unit

    def _register_units(self, r: SimRequest) -> None:
        """Turn ``r``'s computed, hashed prompt units into shared cached units."""
        unit = self.config.prefix_unit_tokens
        au, ev = self._active_units, self._evictable
        while r.n_units < len(r.hashes) and (r.n_units + 1) * unit <= min(r.computed, r.prompt):
            h = r.hashes[r.n_units]
            if h in au or h in ev or len(r.units) != r.n_units:
                break  # computed twice concurrently: keep ours private (vLLM dedups too)
            au[h] = 1
            r.units.append(h)
            r.blocks -= self._unit_blocks
            r.n_units += 1

    def _blocks_needed(self, r: SimRequest, new_tokens: int) -> int:
        need = -(-(r.computed + new_tokens) // self.config.block_size)
        return need - len(r.units) * self._unit_blocks - r.blocks

    def _preempt(self, r: SimRequest) -> None:
        self._free(r)
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
        self._macro_k = 0
        if self.fast_forward and not self.waiting and self.running:
            d = self._begin_run(now_s, horizon_s)
            if d is not None:
                return d
        cfg = self.config
        budget = cfg.max_num_batched_tokens
        sched = self._scheduled
        sched.clear()
        running = self.running
        preempted = False
        n_prefill = prefill_tokens = n_decode = decode_kv = 0
        prefill_work = 0.0
        i = 0
        while i < len(running) and budget > 0:
            r = running[i]
            n = r.prompt + r.generated - r.computed
            if n > budget:
                n = budget
            need = (
                -(-(r.computed + n) // cfg.block_size) - len(r.units) * self._unit_blocks - r.blocks
            )
            ok = True
            while need > 0 and not self._alloc(need):
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
                prefill_work += n * (r.computed + 0.5 * n)
            i += 1
        if not preempted:
            waiting = self.waiting
            while waiting and budget > 0 and len(running) < cfg.max_num_seqs:
                r = waiting[0]
                if r.computed == 0 and r.hashes:
                    self._take_prefix(r)
                n = r.prompt + r.generated - r.computed
                if n > budget:
                    n = budget
                need = self._blocks_needed(r, n)
                if need > 0 and not self._alloc(need):
                    if r.units:  # give the prefix back; retry later
                        self._free(r)
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
                    self._pending[QUEUE_WAIT].append(now_s - r.arrival_s)
                sched.append((r, n))
                budget -= n
                n_prefill += 1
                prefill_tokens += n
                prefill_work += n * (r.computed + 0.5 * n)
        if not sched:
            return None
        num_tokens = cfg.max_num_batched_tokens - budget
        mean, var = self.perf.mean_var(
            num_tokens, n_prefill, prefill_tokens, prefill_work, n_decode, decode_kv
        )
        zi = self._zi
        if zi >= len(self._z):
            self._z = self._rng.standard_normal(_Z_BLOCK).tolist()
            zi = 0
        self._zi = zi + 1
        if var > 0.0:
            s2 = math.log1p(var / (mean * mean))
            dur = mean * math.exp(math.sqrt(s2) * self._z[zi] - 0.5 * s2)
        else:
            dur = mean
        self._step_start = now_s
        self.last_step_tokens = num_tokens
        self.last_step_seqs = len(sched)
        self.last_prefill_tokens = prefill_tokens
        self.last_decode_seqs = n_decode
        return dur

    _MAX_RUN = 256  # steps per fast-forwarded run

    def _begin_run(self, now_s: float, horizon_s: float) -> float | None:
        running = self.running
        n = len(running)
        if n > self.config.max_num_batched_tokens:
            return None
        bs = self.config.block_size
        ub = self._unit_blocks
        k = self._MAX_RUN
        k_room = k
        kv = 0
        for r in running:
            c = r.computed
            if r.generated == 0 or c != r.prompt + r.generated - 1:
                return None  # not a plain decode
            left = r.output - r.generated
            room = (len(r.units) * ub + r.blocks) * bs - c  # steps before a new block
            if left < k:
                k = left
            if room < k_room:
                k_room = room
            kv += c + 1
        if k_room < k:
            # Blocks the run will need: take them now if empty blocks cover them all
            # (then no step of the run would evict or preempt, as in step-by-step
            # allocation); otherwise stop the run where the first block is needed.
            needs = [
                max(0, -(-(r.computed + k) // bs) - len(r.units) * ub - r.blocks) for r in running
            ]
            total = sum(needs)
            if total <= self._empty:
                self._empty -= total
                for r, extra in zip(running, needs, strict=True):
                    r.blocks += extra
            else:
                k = k_room
        if k < 2:
            return None
        z = self._z
        zi = self._zi
        if zi + k > len(z):
            z = self._z = self._rng.standard_normal(_Z_BLOCK).tolist()
            zi = 0
        # In a decode run the KV read grows by n tokens a step; both perf models
        # are linear in it for the mean and quadratic for the variance, so three
        # evaluations give every step's moments exactly.
        mv = self.perf.mean_var
        m0, v0 = mv(n, 0, 0, 0.0, n, kv)
        m1, v1 = mv(n, 0, 0, 0.0, n, kv + n)
        _, v2 = mv(n, 0, 0, 0.0, n, kv + 2 * n)
        dm = m1 - m0
        dv = v1 - v0
        ddv = (v2 - 2.0 * v1 + v0) / 2.0
        ends = self._macro
        ends.clear()
        t = now_s
        log1p, sqrt, exp = math.log1p, math.sqrt, math.exp
        for j in range(k):
            mean = m0 + j * dm
            var = v0 + j * (dv - ddv) + j * j * ddv
            if var > 0.0:
                s2 = log1p(var / (mean * mean))
                t += mean * exp(sqrt(s2) * z[zi + j] - 0.5 * s2)
            else:
                t += mean
            ends.append(t)
            if t >= horizon_s:
                break
        k = len(ends)
        self._zi = zi + k
        self._macro_k = k
        self._step_start = now_s
        self.last_step_tokens = n
        self.last_step_seqs = n
        self.last_prefill_tokens = 0
        self.last_decode_seqs = n
        return t - now_s

    def interrupt(self, now_s: float) -> float | None:
        """Cut a fast-forwarded run at the first step boundary at or after ``now_s``.
        Returns the run's new end time when it changed, else None (the caller's
        pending end event stays valid)."""
        k = self._macro_k
        if k < 2:
            return None
        ends = self._macro
        j = bisect.bisect_left(ends, now_s, 0, k) + 1  # steps finished by the boundary
        if j >= k:
            return None
        self._zi -= k - j  # give back the unused draws
        self._macro_k = j
        del ends[j:]
        return ends[-1]

    def _end_run(self, now_s: float) -> list[SimRequest]:
        k = self._macro_k
        self._macro_k = 0
        ends = self._macro
        start = self._step_start
        n = len(self.running)
        used = self.kv_blocks_used
        durs = [b - a for a, b in zip([start, *ends[:-1]], ends, strict=True)]
        self.log_dur.extend(durs)
        self.log_decodes.extend([n] * k)
        self._pending[STEP].extend(durs)
        itl_v, itl_n = self._pend_itl_v, self._pend_itl_n
        if k > 1:  # steps after the first: every sequence's ITL is the step time
            itl_v.extend(durs[1:])
            itl_n.extend([n] * (k - 1))
        last = ends[-1]
        span = last - start
        self.steps += k
        self.busy_s += span
        self.kv_block_s += used * span
        self._prev_step_end = last
        first_end = ends[0]
        finished: list[SimRequest] = []
        same = 0
        for r in self.running:
            r.computed += k
            r.generated += k
            if r.last_token_s == start:
                same += 1
            else:
                itl_v.append(first_end - r.last_token_s)
                itl_n.append(1)
            r.last_token_s = last
            if r.generated >= r.output:
                r.finish_s = last
                finished.append(r)
        if same:
            itl_v.append(first_end - start)
            itl_n.append(same)
        if finished:
            self._finish(finished)
        return finished

    def _finish(self, finished: list[SimRequest]) -> None:
        done = set(map(id, finished))
        self.running = [r for r in self.running if id(r) not in done]
        e2e = self._pending[E2E]
        for r in finished:
            self._free(r)
            e2e.append(r.finish_s - r.arrival_s)
        self.completed += len(finished)

    def end_step(self, now_s: float) -> list[SimRequest]:
        """Finish the step (or fast-forwarded run) begun last, at ``now_s`` (its end);
        return the requests that completed in it (``finish_s`` set, blocks freed)."""
        if self._macro_k:
            return self._end_run(now_s)
        dur = now_s - self._step_start
        self.steps += 1
        self.busy_s += dur
        used = self.kv_blocks_used
        self.kv_block_s += used * dur
        self.log_dur.append(dur)
        self.log_decodes.append(self.last_decode_seqs)
        self._pending[STEP].append(dur)
        if self.last_prefill_tokens:
            self._pending[PREFILL_STEP].append(dur)
            self._pend_pstp.append(dur / self.last_prefill_tokens)
        prev_end = self._prev_step_end
        self._prev_step_end = now_s
        finished: list[SimRequest] = []
        emitted = self.last_emitted
        emitted.clear()
        collect = self.collect_tokens
        itl_v, itl_n = self._pend_itl_v, self._pend_itl_n
        same = 0
        for r, n in self._scheduled:
            r.computed += n
            if r.hashes and r.n_units < len(r.hashes):
                self._register_units(r)
            if r.computed < r.prompt + r.generated:
                continue  # a chunk of a prefill: no token yet
            r.generated += 1
            if collect:
                emitted.append(r)
            last = r.last_token_s
            if last < 0:
                r.first_token_s = now_s
                self._pending[TTFT].append(now_s - r.arrival_s)
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

    # ---- telemetry ---------------------------------------------------------------
    def _has_pending(self) -> bool:
        return bool(self._pend_itl_v or self._pend_pstp or any(self._pending.values()))

    def _fold(self, full: bool, now_s: float = math.inf) -> None:
        """Fold pending samples into the estimators. With a ``fold_interval_s``
        (the DES), the per-request metrics (a few samples per interval) wait until
        ``_SPARSE_BATCH`` samples are pending or ``_SPARSE_LAG`` intervals passed:
        a fold costs ~50 µs whatever its size, and a handful of samples moves a
        read-out of half-life ``recent_halflife`` samples by a few % at most."""
        if not self._has_pending():
            return
        self._recent_stats = None
        interval = self.config.fold_interval_s
        sparse_due = full or interval <= 0 or now_s - self._sparse_fold_t >= _SPARSE_LAG * interval
        if sparse_due:
            self._sparse_fold_t = now_s
        for metric, vals in self._pending.items():
            if vals and (sparse_due or len(vals) >= _SPARSE_BATCH):
                self._recent[metric].update(vals)
                if full:
                    self._summaries[metric].update(vals)
                vals.clear()
        if self._pend_itl_v:
            x = np.repeat(np.asarray(self._pend_itl_v), np.asarray(self._pend_itl_n))
            self._recent[ITL].update(x)
            if full:
                self._summaries[ITL].update(x)
            self._pend_itl_v.clear()
            self._pend_itl_n.clear()
        if self._pend_pstp and (sparse_due or len(self._pend_pstp) >= _SPARSE_BATCH):
            self._recent_pstp.update(self._pend_pstp)
            self._pend_pstp.clear()

    def snapshot(self, now_s: float, *, full: bool = True) -> ReplicaSnapshot:
        """The replica's ``ReplicaSnapshot`` at ``now_s``. ``full=False`` skips the
        mergeable ``summaries`` (the simulator's fast path: routers read ``recent``);
        samples seen then are not in later summaries."""
        snap = self._snap
        fold = full or now_s - self._fold_t >= self.config.fold_interval_s
        if fold and not full and not self._has_pending():
            fold = False  # nothing to fold in: the read-outs are unchanged
            self._fold_t = now_s
        key = (
            len(self.running), len(self.waiting), self._empty, len(self._evictable),
            self.completed, self.preemptions, self.rejected, self.last_prefill_tokens,
            self.last_decode_seqs,
        )  # fmt: skip
        if not full and not fold and snap is not None and key == self._snap_key:
            # nothing a snapshot shows has changed (the batch heterogeneity drifts
            # within a decode run and is refreshed with the batch): re-stamp it
            fresh = copy.copy(snap)
            object.__setattr__(fresh, "time_s", max(now_s, 0.0))
            self._snap = fresh
            return fresh
        if fold:
            self._fold(full, now_s)
            self._fold_t = now_s
        waiting_prefill = sum(r.prompt + r.generated - r.computed for r in self.waiting)
        ctx = [r.computed for r in self.running]
        het = 1.0
        if len(ctx) > 1:
            m = sum(ctx) / len(ctx)
            if m > 0:
                het = 1.0 + math.sqrt(sum((c - m) ** 2 for c in ctx) / len(ctx)) / m
        recent = self._recent_stats
        if recent is None:  # read-outs change only when samples are folded in
            recent = self._recent_stats = {
                k: DecayedStats(est.mean, est.std, est.n_eff, est.autocorr)
                for k, est in self._recent.items()
                if est.count
            }
        pstp = (
            self._recent_pstp.mean if self._recent_pstp.count else self.perf.prefill_s_per_token()
        )
        cached: frozenset[int] = frozenset()
        if self.config.enable_prefix_caching and (self._active_units or self._evictable):
            cap = self.config.max_advertised_prefixes
            keys = list(self._active_units) + list(self._evictable)
            cached = frozenset(keys[-cap:])
        q = self.prefix_query_tokens
        snap = ReplicaSnapshot(
            replica_id=self.replica_id,
            pool=self.pool,
            time_s=max(now_s, 0.0),
            accelerator=self.accelerator,
            running=len(self.running),
            waiting=len(self.waiting),
            waiting_prefill_tokens=waiting_prefill,
            kv_blocks_used=self.kv_blocks_used,
            kv_blocks_total=self.config.num_blocks,
            block_size=self.config.block_size,
            prefix_hit_rate=self.prefix_hit_tokens / q if q else 0.0,
            preemptions=self.preemptions,
            completed=self.completed,
            prefill_s_per_token=max(pstp, 0.0),
            batch=BatchComposition(self.last_prefill_tokens, self.last_decode_seqs, het),
            summaries={k: s.copy() for k, s in self._summaries.items() if s.n} if full else {},
            recent=recent,
            cached_prefix_hashes=cached,
        )
        if not full:
            self._snap, self._snap_key = snap, key
        return snap
