"""A streamed response's body, guarded: a mid-stream failure ends it with an error event.

The ingress (``orchestrator.ingress``) wraps every streamed answer's chunks in
``guarded_stream``. A failure after the response started (the pool replica died,
or Serve turned a task Ray cancelled into ``asyncio.CancelledError``) cannot
change the HTTP status any more, and a raise would only close the chunked body as
if the answer were complete; so the client gets one OpenAI-style error event
(``data: {"error": {...}}``) and the stream ends. A client that left (this task
cancelled, or the generator closed) is let go: nothing is sent.

Two counters, because they differ whenever the client cannot be reached
(``StreamCounters``): ``failures`` counts streams whose upstream failed mid-way;
``errors_sent`` counts error events the server handed to the client's connection
(counted when the transport took the event and asked for the next chunk, so an
event sent into a connection that failed, or a generator closed on it, is not).
A client that read its stream to the end saw exactly ``errors_sent`` error events.

Pure (no Ray, no web framework): unit-tested with fake chunk iterators.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("cascade.ingress")


@dataclass
class StreamCounters:
    """Mid-stream failures and the error events that reached the transport (module doc)."""

    failures: int = 0
    errors_sent: int = 0


def error_event(exc: BaseException) -> str:
    """The server-sent event a client gets for a stream that failed mid-way."""
    message = f"the stream was interrupted: {type(exc).__name__}: {str(exc)[:200]}"
    error = {"message": message, "type": "InternalServerError", "code": 500}
    return f"data: {json.dumps({'error': error})}\n\n"


def token_events(chunk: object) -> tuple[int, bool]:
    """Output tokens in one streamed chunk, counted as its server-sent events
    (vLLM streams one delta per token; the final ``[DONE]`` is not one), and
    whether the chunk carries ``[DONE]``; one decode per chunk (the token path).
    The count is an approximation when a delta carries several tokens or a
    usage-only event is sent; documented in docs/observability.md."""
    text = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else str(chunk)
    done = text.count("data: [DONE]")
    return max(text.count("data: ") - done, 0), done > 0


def being_cancelled() -> bool:
    """Whether the running task itself is being cancelled (a client that left),
    as opposed to a CancelledError raised by something it awaited."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def guarded_stream(
    chunks: AsyncIterable[Any],
    counters: StreamCounters,
    on_done: Callable[[float | None, int], None],
    *,
    t0: float,
    clock: Callable[[], float] = time.perf_counter,
    cancelled: Callable[[], bool] = being_cancelled,
) -> AsyncGenerator[Any, None]:
    """Yield ``chunks``; at their end call ``on_done(ttft_s, tokens)`` (TTFT from
    ``t0`` on ``clock``, None without a chunk; tokens by ``token_events``). On a
    failure mid-way yield one error event instead and end (``on_done`` is not
    called); see the module doc for what is counted. ``cancelled()`` tells a
    client that left (re-raised, nothing sent or counted) from a CancelledError
    that came from upstream (a failure)."""
    ttft: float | None = None
    tokens = 0
    finished = False  # the [DONE] event went out: the client has the whole answer
    try:
        async for chunk in chunks:
            if ttft is None:
                ttft = clock() - t0
            n, done = token_events(chunk)
            tokens += n
            finished = finished or done
            yield chunk
    except (Exception, asyncio.CancelledError) as exc:
        if finished:
            # after [DONE] the answer is complete: a client that closed its
            # connection on it makes Serve cancel the upstream call, whose
            # CancelledError is no failure (measured: the soak's clients close
            # on [DONE]; each race counted a "failed" stream before)
            on_done(ttft, tokens)
            return
        # A client that left cancels this task (GeneratorExit, or a CancelledError
        # with the task marked cancelling): let it go. A CancelledError with the
        # task *not* cancelling comes from upstream: Serve turns a replica task
        # that Ray cancelled (its node was lost) into asyncio.CancelledError;
        # re-raised, it would cut the chunked body (the client's "incomplete
        # chunked read"), so it gets the error event like any other failure.
        if isinstance(exc, asyncio.CancelledError) and cancelled():
            raise
        counters.failures += 1
        if counters.failures == 1:
            logger.exception("a stream failed mid-way; the client gets an error event")
        yield error_event(exc)
        # resumed: the transport sent the event and asks for more (a failed send
        # or a client that left closes the generator at the yield instead)
        counters.errors_sent += 1
        return
    on_done(ttft, tokens)
