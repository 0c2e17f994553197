"""The ingress' stream wrapper (``CascadeIngress._timed_stream``) on its own: how
an upstream failure mid-stream reaches the client, and that a client that left
is let go. No Ray cluster: the method runs with a stand-in ``self`` (it only
touches the counters and ``_observe``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("ray")
from orchestrator.ingress import CascadeIngress

CHUNK = 'data: {"choices": [{"text": "a"}]}\n\n'


def _ingress() -> Any:
    observed: list[Any] = []
    me = SimpleNamespace(stream_errors=0, observed=observed)
    me._observe = lambda *args: observed.append(args)
    return me


async def _upstream(n: int, fail: BaseException | None) -> AsyncIterator[str]:
    for _ in range(n):
        yield CHUNK
        await asyncio.sleep(0)
    if fail is not None:
        raise fail
    yield "data: [DONE]\n\n"


async def _collect(me: Any, upstream: AsyncIterator[str]) -> list[str]:
    stream = CascadeIngress._timed_stream(me, upstream, 0.0, None, "llm", None)
    return [chunk async for chunk in stream]


@pytest.mark.parametrize(
    "fail",
    [RuntimeError("replica died"), asyncio.CancelledError()],
    ids=["exception", "upstream-cancelled"],
)
def test_an_upstream_failure_mid_stream_ends_with_an_error_event(fail: BaseException) -> None:
    """A replica lost mid-stream (Ray's error, or the CancelledError Serve makes of
    a task Ray cancelled when its node died) ends the stream with one OpenAI-style
    error event after the chunks already sent: never a cut chunked body."""
    me = _ingress()
    chunks = asyncio.run(_collect(me, _upstream(3, fail)))
    assert chunks[:3] == [CHUNK] * 3 and len(chunks) == 4
    error = json.loads(chunks[3].removeprefix("data: "))["error"]
    assert error["code"] == 500 and type(fail).__name__ in error["message"]
    assert me.stream_errors == 1 and me.observed == []  # a failed request is no outcome


def test_a_client_that_left_is_let_go() -> None:
    """The task serving the stream cancelled (the client disconnected): the
    CancelledError propagates, no error event is produced and nothing is counted."""
    me = _ingress()
    got: list[str] = []

    async def consume() -> None:
        stream = CascadeIngress._timed_stream(me, _upstream(10**6, None), 0.0, None, "llm", None)
        async for chunk in stream:
            got.append(chunk)

    async def main() -> None:
        task = asyncio.create_task(consume())
        while len(got) < 3:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert all(c == CHUNK for c in got) and me.stream_errors == 0


def test_a_complete_stream_is_observed_once() -> None:
    me = _ingress()
    chunks = asyncio.run(_collect(me, _upstream(5, None)))
    assert chunks[-1] == "data: [DONE]\n\n" and me.stream_errors == 0
    assert len(me.observed) == 1


def test_outcomes_are_queued_on_the_path_and_folded_in_the_background() -> None:
    """A finished request only queues its outcome (``_observe``); the background
    fold makes each prediction from the inputs taken at its decision, then
    settles it, oldest first. A full backlog drops the oldest and counts it."""
    from collections import deque

    settled: list[tuple[Any, ...]] = []
    predicted: list[str] = []

    def predict_from(inputs: str) -> str:
        predicted.append(inputs)
        return f"record-{inputs}"

    me = SimpleNamespace(
        _outcomes=deque(maxlen=3),
        outcomes_dropped=0,
        gateway=SimpleNamespace(predict_from=predict_from),
        _settle=lambda *args: settled.append(args),
    )
    for i in range(4):  # the first is dropped: the backlog holds 3
        CascadeIngress._observe(me, f"req{i}", "llm", 0.1, 1.0, f"in{i}" if i != 2 else None, 7)
    assert me.outcomes_dropped == 1 and predicted == [] and settled == []
    asyncio.run(CascadeIngress._fold_outcomes(me))
    assert predicted == ["in1", "in3"]  # request 2 had no telemetry: no prediction
    assert [s[0] for s in settled] == ["req1", "req2", "req3"]
    assert [s[4] for s in settled] == ["record-in1", None, "record-in3"]
    assert not me._outcomes
