"""FirstChunkBatcher: the first chunk goes out when it exists, the rest in batches.

Timings use the real event loop with sources that sleep tens of ms; the
assertions leave >= 30 ms of margin either side (a loaded 2-core CI host
delays a wake-up by a few ms, never by the margins).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from replicas.stream_batcher import FirstChunkBatcher


async def _source(delays: list[float], fail: bool = False) -> AsyncIterator[int]:
    """Item i after sleeping delays[i] s; raises RuntimeError at the end if ``fail``."""
    for i, d in enumerate(delays):
        await asyncio.sleep(d)
        yield i
    if fail:
        raise RuntimeError("engine died")


async def _timed_batches(batcher: FirstChunkBatcher[int]) -> list[tuple[float, list[int]]]:
    t0 = time.perf_counter()
    return [(time.perf_counter() - t0, batch) async for batch in batcher.stream()]


def test_first_chunk_is_not_held_for_the_interval() -> None:
    # first item at 20 ms, interval 200 ms: Ray's Batcher would send it at 200 ms
    out = asyncio.run(_timed_batches(FirstChunkBatcher(_source([0.02, 0.01, 0.01]), 0.2)))
    first_t, first = out[0]
    assert first == [0] and first_t < 0.1
    assert [i for _, b in out for i in b] == [0, 1, 2]  # nothing lost, order kept
    # the others were batched: they came 10 ms apart, both inside one interval
    assert len(out) == 2 and out[1][1] == [1, 2]


def test_later_items_wait_for_the_interval_or_the_end() -> None:
    # items at 0, 20, 40, 60 ms, then the source stays open until 400 ms
    async def slow_end() -> AsyncIterator[int]:
        async for i in _source([0.0, 0.02, 0.02, 0.02]):
            yield i
        await asyncio.sleep(0.34)

    out = asyncio.run(_timed_batches(FirstChunkBatcher(slow_end(), 0.15)))
    assert out[0][1] == [0]
    # the second batch goes at the end of the first interval (~150 ms), not per item
    t, batch = out[1]
    assert batch == [1, 2, 3] and 0.1 < t < 0.3
    assert len(out) == 2  # the end with nothing queued yields no empty batch


def test_end_flushes_without_waiting_for_the_interval() -> None:
    t0 = time.perf_counter()
    out = asyncio.run(_timed_batches(FirstChunkBatcher(_source([0.01, 0.01]), 5.0)))
    assert [i for _, b in out for i in b] == [0, 1]
    assert time.perf_counter() - t0 < 1.0  # not the 5 s interval


def test_source_error_is_raised_after_its_items() -> None:
    async def main() -> list[int]:
        seen: list[int] = []
        with pytest.raises(RuntimeError, match="engine died"):
            async for batch in FirstChunkBatcher(_source([0.0, 0.01], fail=True), 0.05).stream():
                seen.extend(batch)
        return seen

    assert asyncio.run(main()) == [0, 1]


def test_zero_interval_yields_each_item_alone_and_none_batches_the_rest() -> None:
    out0 = asyncio.run(_timed_batches(FirstChunkBatcher(_source([0.0, 0.0, 0.0]), 0)))
    assert [b for _, b in out0] == [[0], [1], [2]]
    out_none = asyncio.run(_timed_batches(FirstChunkBatcher(_source([0.0, 0.02, 0.02]), None)))
    assert [b for _, b in out_none] == [[0], [1, 2]]


def test_closing_the_stream_stops_reading_the_source() -> None:
    reads: list[int] = []

    async def endless() -> AsyncIterator[int]:
        i = 0
        while True:
            await asyncio.sleep(0.005)
            reads.append(i)
            yield i
            i += 1

    async def main() -> int:
        gen = FirstChunkBatcher(endless(), 0.02).stream()
        await gen.__anext__()
        await gen.aclose()  # the client went away
        n = len(reads)
        await asyncio.sleep(0.1)
        return len(reads) - n

    assert asyncio.run(main()) == 0


def test_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        FirstChunkBatcher(_source([]), -1.0)
