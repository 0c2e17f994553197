"""The scheduler's fast-forward: a run of alike decode-only steps scheduled at once.

When nothing waits and every running request is decoding with room in its KV
blocks (or empty blocks cover what the run will need), the next k steps are all
alike: same sequences, no allocation, no finish before the k-th. ``DecodeRun``
plans such a run (each step still draws its own time, ``StepTimeSampler.decode_run``),
can cut it at the first step boundary after an arrival (``cut``: an arrival must
join at the next step, as in vLLM), and applies it to the requests at its end
(``apply``). The DES turns it on (``fast_forward``); the real-time ``SimEngine``
does not. Results equal stepping one step at a time, with the same draws.
"""

from __future__ import annotations

import bisect
from itertools import pairwise

from replicas.engine_telemetry import EngineTelemetry
from replicas.kv_cache import KVCacheManager
from replicas.sim_request import SimRequest
from replicas.step_time import StepTimeSampler

MAX_RUN = 256  # steps per fast-forwarded run


class DecodeRun:
    """The run in progress: ``ends`` holds each step's end time, ``k`` its steps
    (0: no run in progress)."""

    __slots__ = ("ends", "k")

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.k = 0

    def plan(
        self,
        running: list[SimRequest],
        kvc: KVCacheManager,
        steptime: StepTimeSampler,
        max_num_batched_tokens: int,
        now_s: float,
        horizon_s: float,
    ) -> float | None:
        """Schedule a run from ``now_s`` (ending at the first step boundary at or
        after ``horizon_s``); its end time, or None when the batch does not allow one
        (then nothing changed)."""
        n = len(running)
        if n > max_num_batched_tokens:
            return None
        bs = kvc.block_size
        ub = kvc.unit_blocks
        k = MAX_RUN
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
            if total <= kvc.empty:
                kvc.empty -= total
                for r, extra in zip(running, needs, strict=True):
                    r.blocks += extra
            else:
                k = k_room
        if k < 2:
            return None
        t = steptime.decode_run(n, kv, k, now_s, horizon_s, self.ends)
        self.k = len(self.ends)
        return t

    def cut(self, now_s: float, steptime: StepTimeSampler) -> float | None:
        """Cut the run at the first step boundary at or after ``now_s``; the run's
        new end time when it changed, else None."""
        k = self.k
        if k < 2:
            return None
        ends = self.ends
        j = bisect.bisect_left(ends, now_s, 0, k) + 1  # steps finished by the boundary
        if j >= k:
            return None
        steptime.give_back(k - j)  # the draws of the steps not taken
        self.k = j
        del ends[j:]
        return ends[-1]

    def apply(
        self, running: list[SimRequest], start: float, tel: EngineTelemetry
    ) -> list[SimRequest]:
        """The run's k tokens per request (it began at ``start``): ITL samples to
        ``tel``; returns the requests that finished (``finish_s`` set). Ends the run."""
        k = self.k
        self.k = 0
        ends = self.ends
        n = len(running)
        itl_v, itl_n = tel.itl_v, tel.itl_n
        if k > 1:  # steps after the first: every sequence's ITL is the step time
            itl_v.extend(b - a for a, b in pairwise(ends))
            itl_n.extend([n] * (k - 1))
        last = ends[-1]
        first_end = ends[0]
        finished: list[SimRequest] = []
        same = 0
        for r in running:
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
        return finished
