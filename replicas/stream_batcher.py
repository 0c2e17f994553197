"""``FirstChunkBatcher``: a stream's chunks batched every interval, its first one at once.

Ray Serve LLM's ``LLMServer`` batches a streamed answer's chunks (``Batcher``,
``stream_batching_interval_ms``, 50 ms by default) to cut per-chunk overhead.
Its timer starts when the stream starts, so the first token, however early the
engine makes it, waits for the end of the first interval: on a host where a
prefill takes 5-20 ms, a client's TTFT is ~50 ms plus transport, and a first
token made 1 ms after a boundary waits a whole interval. TTFT is what an
interactive user feels, and the engine's own prefill time is the floor it
should be near.

This batcher keeps Ray's batching for everything after the first chunk and
sends the first chunk (with whatever else is queued by then) as soon as the
engine makes it; the interval timer starts from that flush. Cost: at most one
extra message per request. E2E is unchanged (the last batch goes out when the
source ends, as with Ray's). Errors of the source are raised after the chunks
read before them were yielded (as Ray's); closing the stream cancels the read.

Pure asyncio (no Ray), so its behaviour is unit-tested with a fake clock-free
source.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Generic, TypeVar

__all__ = ["FirstChunkBatcher"]

T = TypeVar("T")


class FirstChunkBatcher(Generic[T]):
    """Batches of ``source``'s items: the first as soon as it exists, then one
    batch every ``interval_s`` seconds (and the last when ``source`` ends).

    ``interval_s``: seconds between batches after the first; 0 yields every item
    alone as it comes (Ray's meaning of 0); ``None`` yields the first batch at
    once and everything else in one batch at the end. Negative raises
    ``ValueError``. The read task starts on the first ``stream()`` step, so a
    batcher that is never iterated reads nothing.
    """

    def __init__(self, source: AsyncIterator[T], interval_s: float | None) -> None:
        if interval_s is not None and interval_s < 0:
            raise ValueError(f"interval_s must be >= 0 or None, got {interval_s}")
        self._source = source
        self._interval_s = interval_s
        self._queue: list[T] = []
        # set by the first item or the end; the end alone wakes the later waits,
        # so a batch costs one wake-up, not one per item
        self._first = asyncio.Event()
        self._ended = asyncio.Event()

    async def _read(self) -> None:
        try:
            async for item in self._source:
                self._queue.append(item)
                self._first.set()
        finally:
            self._ended.set()
            self._first.set()

    def _drain(self) -> list[T]:
        batch, self._queue = self._queue, []
        return batch

    async def stream(self) -> AsyncGenerator[list[T], None]:
        if self._interval_s == 0:
            async for item in self._source:
                yield [item]
            return
        reader = asyncio.get_running_loop().create_task(self._read())
        try:
            # the first chunk: as soon as there is one (or the source ended)
            await self._first.wait()
            while True:
                done = self._ended.is_set()  # read before draining: nothing is lost after
                batch = self._drain()
                if batch:
                    yield batch
                if done:
                    reader.result()  # the source's error, after its items
                    return
                await self._wait_next()
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    async def _wait_next(self) -> None:
        """Until the interval has passed or the source ended (whichever is first)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout=self._interval_s)
