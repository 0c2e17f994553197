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
and the newest snapshot goes next period. An idle replica (nothing running or
waiting, and nothing finished or allocated since its last push) pushes only a
heartbeat every ``heartbeat_s`` (``IDLE`` otherwise): each push is an actor call
that costs CPU on both sides, and an idle cluster's pushes carried nothing new.
Serving never depends on any of this.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
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
    IDLE = "idle"  # nothing new on an idle replica, heartbeat not due


# An idle replica still pushes this often: well inside the controller's default
# ``stale_after_s`` (5 s), so an idle replica is never taken for a dead one.
HEARTBEAT_S = 1.0


def _activity(snap: ReplicaSnapshot) -> tuple[int, int, int, int] | None:
    """What an idle replica's snapshots share; None while it is busy."""
    if snap.running or snap.waiting:
        return None
    return (snap.running, snap.waiting, snap.completed, snap.kv_blocks_used)


class SnapshotPusher:
    """See the module docstring.

    Args:
        build: builds this period's snapshot.
        lookup: returns a controller handle; raises ``ValueError`` if there is none.
        send: sends a snapshot to a handle, returns the push's future.
        on_snapshot: called with each built snapshot (metrics export); its errors are
            ignored.
        heartbeat_s: an idle replica's push interval (s; see the module docstring).
        clock: monotonic seconds (injected in tests).
    """

    def __init__(
        self,
        build: Callable[[], ReplicaSnapshot],
        lookup: Callable[[], Any],
        send: Callable[[Any, ReplicaSnapshot], PushFuture],
        *,
        on_snapshot: Callable[[ReplicaSnapshot], object] | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._build = build
        self._lookup = lookup
        self._send = send
        self._on_snapshot = on_snapshot
        self.controller: Any = None
        self.pushes = 0
        self.errors: dict[str, int] = {}  # "<step>:<exception type>" -> count
        self._inflight: PushFuture | None = None
        self.heartbeat_s = heartbeat_s
        self._clock = clock
        self._pushed_s = -float("inf")
        self._pushed_activity: tuple[int, int, int, int] | None = None

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
        activity = _activity(snap)
        now = self._clock()
        if (
            activity is not None
            and activity == self._pushed_activity
            and now - self._pushed_s < self.heartbeat_s
        ):
            return PushOutcome.IDLE
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
        self._pushed_s, self._pushed_activity = now, activity
        return PushOutcome.PUSHED

    def _error(self, step: str, exc: BaseException, message: str) -> None:
        key = f"{step}:{type(exc).__name__}"
        first = key not in self.errors
        self.errors[key] = self.errors.get(key, 0) + 1
        if first:  # once per type: a persistent fault must not flood the replica's log
            logger.warning("%s (%s; logged once per type)", message, key, exc_info=exc)
