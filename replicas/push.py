"""One period of a replica's snapshot push, kept pure: which failure means what.

``CascadeLLMServer``'s background loop calls ``SnapshotPusher.tick()`` every
``snapshot_period_s``; the Ray calls come in as three callables, so the
classification below is unit-tested without Ray. The steps fail for different
reasons and are never confused:

1. ``build()`` raising (the engine's or the recorder's snapshot: a bug or a bad
   engine state) is a *snapshot error*: counted per exception type, logged once per
   type; the controller handle is kept, because nothing is wrong with the controller.
2. ``lookup()`` raising ``ValueError`` is Ray's "no actor of that name": the
   controller is not started yet, or is being replaced. Not an error; retried next
   period. Anything else ``lookup()`` raises is a *lookup error* (counted, logged once).
3. The previous push having failed (its future holds an exception: e.g. the actor was
   killed when ``cascade up`` replaced it for a new config) or ``send()`` raising is
   a *push error*: counted, logged once per type, and the handle is dropped so the
   controller is looked up again (the name may now belong to a new actor).

A push still in flight makes the period a no-op (``BUSY``): the controller is slow,
and the newest snapshot goes next period. Serving never depends on any of this.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable
from typing import Any, Protocol

from replicas.telemetry import ReplicaSnapshot

logger = logging.getLogger("cascade.replica")


class PushFuture(Protocol):
    """The part of ``asyncio.Future`` the pusher uses (a push's result)."""

    def done(self) -> bool: ...

    def cancelled(self) -> bool: ...

    def exception(self) -> BaseException | None: ...


class PushOutcome(enum.Enum):
    PUSHED = "pushed"
    BUSY = "busy"  # the previous push is still in flight
    NO_CONTROLLER = "no_controller"  # lookup raised ValueError: not started (yet)
    SNAPSHOT_ERROR = "snapshot_error"
    LOOKUP_ERROR = "lookup_error"
    PUSH_ERROR = "push_error"


class SnapshotPusher:
    """See the module docstring.

    Args:
        build: builds this period's snapshot.
        lookup: returns a controller handle; raises ``ValueError`` if there is none.
        send: sends a snapshot to a handle, returns the push's future.
        on_snapshot: called with each built snapshot (metrics export); its errors are
            ignored.
    """

    def __init__(
        self,
        build: Callable[[], ReplicaSnapshot],
        lookup: Callable[[], Any],
        send: Callable[[Any, ReplicaSnapshot], PushFuture],
        *,
        on_snapshot: Callable[[ReplicaSnapshot], object] | None = None,
    ) -> None:
        self._build = build
        self._lookup = lookup
        self._send = send
        self._on_snapshot = on_snapshot
        self.controller: Any = None
        self.pushes = 0
        self.errors: dict[str, int] = {}  # "<step>:<exception type>" -> count
        self._inflight: PushFuture | None = None

    def tick(self) -> PushOutcome:
        """One period (never raises)."""
        try:
            snap = self._build()
        except Exception as exc:
            self._error("snapshot", exc, "building the replica snapshot failed")
            return PushOutcome.SNAPSHOT_ERROR
        if self._on_snapshot is not None:
            with contextlib.suppress(Exception):  # metrics never disturb serving
                self._on_snapshot(snap)
        prev = self._inflight
        if prev is not None:
            if not prev.done():
                return PushOutcome.BUSY
            self._inflight = None
            failure = RuntimeError("push cancelled") if prev.cancelled() else prev.exception()
            if failure is not None:
                self._error("push", failure, "the last snapshot push failed; looking it up again")
                self.controller = None
        if self.controller is None:
            try:
                self.controller = self._lookup()
            except ValueError:
                return PushOutcome.NO_CONTROLLER
            except Exception as exc:
                self._error("lookup", exc, "looking the controller up failed")
                return PushOutcome.LOOKUP_ERROR
        try:
            self._inflight = self._send(self.controller, snap)
        except Exception as exc:
            self._error("push", exc, "sending a snapshot failed; looking the controller up")
            self.controller = None
            return PushOutcome.PUSH_ERROR
        self.pushes += 1
        return PushOutcome.PUSHED

    def _error(self, step: str, exc: BaseException, message: str) -> None:
        key = f"{step}:{type(exc).__name__}"
        first = key not in self.errors
        self.errors[key] = self.errors.get(key, 0) + 1
        if first:  # once per type: a persistent fault must not flood the replica's log
            logger.warning("%s (%s; logged once per type)", message, key, exc_info=exc)
