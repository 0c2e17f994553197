"""The ingress' stream guard (``orchestrator.stream_guard.guarded_stream``) on fake
chunk iterators: how an upstream failure mid-stream reaches the client, that a
client that left is let go, and what each counter counts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest

from orchestrator.stream_guard import StreamCounters, guarded_stream

CHUNK = 'data: {"choices": [{"text": "a"}]}\n\n'


async def _upstream(n: int, fail: BaseException | None) -> AsyncIterator[str]:
    for _ in range(n):
        yield CHUNK
        await asyncio.sleep(0)
    if fail is not None:
        raise fail
    yield "data: [DONE]\n\n"


def _guard(
    upstream: AsyncIterator[str], counters: StreamCounters, done: list[Any]
) -> AsyncGenerator[Any, None]:
    ticks = iter(range(100))
    return guarded_stream(
        upstream, counters, lambda ttft, tokens: done.append((ttft, tokens)),
        t0=0.0, clock=lambda: float(next(ticks)),
    )  # fmt: skip


async def _read_all(stream: AsyncIterator[Any]) -> list[Any]:
    return [chunk async for chunk in stream]


@pytest.mark.parametrize(
    "fail",
    [RuntimeError("replica died"), asyncio.CancelledError()],
    ids=["exception", "upstream-cancelled"],
)
def test_an_upstream_failure_mid_stream_ends_with_one_error_event(fail: BaseException) -> None:
    """A replica lost mid-stream (Ray's error, or the CancelledError Serve makes of
    a task Ray cancelled when its node died) ends the stream with one OpenAI-style
    error event after the chunks already sent: never a cut chunked body. A client
    that reads to the end saw one error event: ``errors_sent`` is 1, as is
    ``failures``; a failed request is no outcome (``on_done`` not called)."""
    counters, done = StreamCounters(), list[Any]()
    chunks = asyncio.run(_read_all(_guard(_upstream(3, fail), counters, done)))
    assert chunks[:3] == [CHUNK] * 3 and len(chunks) == 4
    error = json.loads(chunks[3].removeprefix("data: "))["error"]
    assert error["code"] == 500 and type(fail).__name__ in error["message"]
    assert counters == StreamCounters(failures=1, errors_sent=1)
    assert done == []


def test_an_error_event_the_transport_never_took_is_a_failure_not_a_sent_error() -> None:
    """The transport's send of the error event failed, or the client left just
    then: it never asks for the next chunk and closes the generator. Counted as a
    failure, not as an error event a client received (what made the ingress count
    4 errored streams when clients saw 3 is covered by test_faults.py)."""

    async def main() -> StreamCounters:
        counters = StreamCounters()
        stream = _guard(_upstream(2, RuntimeError("replica died")), counters, [])
        got = [await anext(stream) for _ in range(3)]  # two chunks, then the event
        assert "error" in got[2]
        await stream.aclose()
        return counters

    assert asyncio.run(main()) == StreamCounters(failures=1, errors_sent=0)


def test_a_client_that_left_is_let_go() -> None:
    """The task serving the stream cancelled (the client disconnected): the
    CancelledError propagates, no error event is produced and nothing is counted."""
    counters, got = StreamCounters(), []

    async def consume() -> None:
        async for chunk in _guard(_upstream(10**6, None), counters, []):
            got.append(chunk)

    async def main() -> None:
        task = asyncio.create_task(consume())
        while len(got) < 3:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert all(c == CHUNK for c in got) and counters == StreamCounters()


def test_a_complete_stream_is_observed_once_with_its_ttft_and_tokens() -> None:
    """TTFT is the clock at the first chunk minus t0 (the fake clock reads 0 then
    1, ...); tokens count the data events, not ``[DONE]``."""
    counters, done = StreamCounters(), list[Any]()
    chunks = asyncio.run(_read_all(_guard(_upstream(5, None), counters, done)))
    assert chunks[-1] == "data: [DONE]\n\n" and counters == StreamCounters()
    assert done == [(0.0, 5)]


def test_a_cancellation_after_done_is_a_complete_answer_not_a_failure() -> None:
    """The client closes its connection on ``[DONE]``; Serve then cancels the
    upstream call, and its CancelledError reaches the guard after the whole
    answer went out (seen in the soak). Nothing more is sent, nothing counted as
    failed, and the outcome is observed once."""

    async def upstream() -> AsyncIterator[str]:
        yield CHUNK
        yield CHUNK
        yield "data: [DONE]\n\n"
        raise asyncio.CancelledError()

    counters, done = StreamCounters(), list[Any]()
    chunks = asyncio.run(_read_all(_guard(upstream(), counters, done)))
    assert chunks == [CHUNK, CHUNK, "data: [DONE]\n\n"]
    assert counters == StreamCounters()
    assert done == [(0.0, 2)]
