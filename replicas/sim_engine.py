"""``SimEngine``: the engine model run in real time, for Ray replicas without a model.

It drives an ``EngineModel`` from an asyncio task: schedule a step, sleep for its
(drawn) duration, finish it, stream the tokens it emitted. So a Ray Serve replica
can serve thousands of requests with realistic batching, queueing and step-time
variance on a CPU-only machine.

Usage (inside a running event loop)::

    engine = SimEngine(EngineModel(...))
    async for timing in engine.generate(info, output_tokens=128):
        ...  # one TokenTiming per output token (phase PREFILL for the first)
    snap = engine.snapshot()

Time: every timestamp comes from the injected ``clock`` (seconds, monotonic);
``time_scale`` multiplies the sleeps (e.g. 0.01 runs 100× faster than the model
says, for tests; the durations the engine records are then the shorter real ones).
Failure modes: a request that can never fit (KV or ``max_model_len``) raises
``RequestRejected`` from ``generate``; cancelling the consumer aborts the request
and frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from replicas.engine_model import EngineModel, SimRequest
from replicas.telemetry import Phase, ReplicaSnapshot, RequestInfo, TokenTiming


class RequestRejected(RuntimeError):
    """The engine refused a request (it can never fit on this replica)."""


_DONE = object()


class SimEngine:
    """Real-time asyncio wrapper of an ``EngineModel`` (see module docstring)."""

    def __init__(
        self,
        engine: EngineModel,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        time_scale: float = 1.0,
    ) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        engine.collect_tokens = True
        engine.fast_forward = False  # tokens stream step by step
        self.engine = engine
        self._clock = clock
        self._sleep = sleep
        self.time_scale = time_scale
        self._queues: dict[int, asyncio.Queue[object]] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count()

    def _ensure_loop(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self._wake

    async def _run(self) -> None:
        eng = self.engine
        assert self._wake is not None
        while True:
            if not eng.has_work:
                self._wake.clear()
                await self._wake.wait()
                continue
            dur = eng.begin_step(self._clock())
            if dur is None:  # work exists but nothing fits now (cannot happen idle)
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._sleep(dur * self.time_scale)
            now = self._clock()
            finished = eng.end_step(now)
            # the simulator's per-step log (16 bytes a step, read after a run) is
            # read by nobody here: kept, it grew for the life of the replica
            del eng.log_dur[:], eng.log_decodes[:]
            done = {id(r) for r in finished}
            for r in eng.last_emitted:
                q = self._queues.get(r.idx)
                if q is None:
                    continue
                phase = Phase.PREFILL if r.generated == 1 else Phase.DECODE
                q.put_nowait(TokenTiming(r.request_id, eng.replica_id, phase, now, r.generated - 1))
                if id(r) in done:
                    q.put_nowait(_DONE)

    async def generate(
        self, info: RequestInfo, *, output_tokens: int | None = None
    ) -> AsyncIterator[TokenTiming]:
        """Run one request; yield a ``TokenTiming`` per output token, as emitted."""
        wake = self._ensure_loop()
        key = next(self._ids)
        req: SimRequest | None = self.engine.add_request(
            info, self._clock(), output_tokens=output_tokens, idx=key
        )
        if req is None:
            raise RequestRejected(
                f"request {info.request_id} does not fit on {self.engine.replica_id}"
            )
        q: asyncio.Queue[object] = asyncio.Queue()
        self._queues[key] = q
        wake.set()
        finished = False
        try:
            while True:
                item = await q.get()
                if item is _DONE:
                    finished = True
                    return
                assert isinstance(item, TokenTiming)
                yield item
        finally:
            self._queues.pop(key, None)
            if not finished:
                self.engine.abort(info.request_id)

    def snapshot(self, *, full: bool = True) -> ReplicaSnapshot:
        return self.engine.snapshot(self._clock(), full=full)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
