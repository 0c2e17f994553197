"""The replica's push loop: a snapshot that fails to build is not a missing controller."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from replicas.push import PushOutcome, SnapshotPusher
from replicas.telemetry import ReplicaSnapshot


class Done:
    """A finished push (``asyncio.Future``'s interface), failed if ``error``."""

    def __init__(self, error: BaseException | None = None, *, done: bool = True) -> None:
        self.error, self._done = error, done

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def exception(self) -> BaseException | None:
        return self.error


class World:
    """Fakes for build / lookup / send, switchable per test step."""

    def __init__(self) -> None:
        self.build_error: Exception | None = None
        self.lookup_error: Exception | None = None
        self.next_push: Done = Done()
        self.handles = iter(["controller-1", "controller-2", "controller-3"])
        self.lookups = 0
        self.sent: list[tuple[Any, ReplicaSnapshot]] = []
        self.exported = 0

    def build(self) -> ReplicaSnapshot:
        if self.build_error is not None:
            raise self.build_error
        return ReplicaSnapshot(replica_id="r1", pool="p", time_s=float(len(self.sent)))

    def lookup(self) -> str:
        self.lookups += 1
        if self.lookup_error is not None:
            raise self.lookup_error
        return next(self.handles)

    def send(self, handle: Any, snap: ReplicaSnapshot) -> Done:
        self.sent.append((handle, snap))
        return self.next_push

    def export(self, snap: ReplicaSnapshot) -> None:
        self.exported += 1
        raise RuntimeError("metrics backend down")  # must not matter


def _pusher(w: World) -> SnapshotPusher:
    # heartbeat 0: every period pushes, idle or not (the idle rule has its own test)
    return SnapshotPusher(w.build, w.lookup, w.send, on_snapshot=w.export, heartbeat_s=0.0)


def test_an_idle_replica_pushes_only_a_heartbeat_and_any_activity_at_once() -> None:
    clock = [0.0]
    state = {"running": 0, "completed": 5}

    def build() -> ReplicaSnapshot:
        return ReplicaSnapshot(replica_id="r1", pool="p", time_s=clock[0], **state)

    w = World()
    p = SnapshotPusher(build, w.lookup, w.send, heartbeat_s=1.0, clock=lambda: clock[0])
    outcomes = []
    for k in range(9):  # 2 s of 250 ms periods, idle throughout
        clock[0] = 0.25 * k
        outcomes.append(p.tick())
    pushed = [0.25 * k for k, o in enumerate(outcomes) if o is PushOutcome.PUSHED]
    assert pushed == [0.0, 1.0, 2.0]  # one heartbeat a second
    assert {o for o in outcomes} == {PushOutcome.PUSHED, PushOutcome.IDLE}
    clock[0] = 2.25
    state["completed"] = 6  # a request finished since the last push: pushed now
    assert p.tick() is PushOutcome.PUSHED
    clock[0] = 2.5
    state["running"] = 1  # busy: every period pushes
    assert p.tick() is PushOutcome.PUSHED
    clock[0] = 2.75
    assert p.tick() is PushOutcome.PUSHED
    assert p.pushes == len(w.sent) == 6


def test_a_snapshot_error_keeps_the_controller_and_is_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = World()
    p = _pusher(w)
    assert p.tick() is PushOutcome.PUSHED
    assert p.controller == "controller-1"
    w.build_error = ValueError("bad engine state")  # the ValueError the old loop misread
    with caplog.at_level(logging.DEBUG, logger="cascade.replica"):
        outcomes = [p.tick() for _ in range(3)]
    assert outcomes == [PushOutcome.SNAPSHOT_ERROR] * 3
    assert p.controller == "controller-1"  # not mistaken for "controller not started"
    assert p.errors == {"snapshot:ValueError": 3}
    assert len([r for r in caplog.records if "snapshot" in r.getMessage()]) == 1
    w.build_error = KeyError("x")
    p.tick()
    assert p.errors == {"snapshot:ValueError": 3, "snapshot:KeyError": 1}
    w.build_error = None
    assert p.tick() is PushOutcome.PUSHED
    assert w.lookups == 1 and [h for h, _ in w.sent] == ["controller-1", "controller-1"]
    assert p.pushes == 2


def test_no_controller_yet_is_not_an_error_and_is_retried() -> None:
    w = World()
    w.lookup_error = ValueError("Failed to look up actor with name 'cascade-controller'")
    p = _pusher(w)
    assert [p.tick() for _ in range(2)] == [PushOutcome.NO_CONTROLLER] * 2
    assert p.errors == {} and p.controller is None and w.sent == []
    w.lookup_error = None
    assert p.tick() is PushOutcome.PUSHED
    assert w.lookups == 3 and p.controller == "controller-1"
    assert w.exported == 3  # every built snapshot went to metrics, even unsent


def test_a_failed_push_drops_the_handle_and_looks_the_controller_up_again() -> None:
    """The controller was replaced (its old actor killed): the next period finds
    the new one under the same name."""
    w = World()
    p = _pusher(w)
    w.next_push = Done(RuntimeError("ActorDiedError"))
    assert p.tick() is PushOutcome.PUSHED
    w.next_push = Done()
    assert p.tick() is PushOutcome.PUSHED
    assert [h for h, _ in w.sent] == ["controller-1", "controller-2"]
    assert p.errors == {"push:RuntimeError": 1}


def test_a_push_in_flight_skips_the_period_and_a_send_error_is_counted() -> None:
    w = World()
    p = _pusher(w)
    slow = w.next_push = Done(done=False)
    assert p.tick() is PushOutcome.PUSHED
    assert p.tick() is PushOutcome.BUSY
    assert len(w.sent) == 1
    slow._done = True  # the slow push completes, successfully

    def broken_send(handle: Any, snap: ReplicaSnapshot) -> Done:
        raise TypeError("cannot serialise")

    p._send = broken_send
    assert p.tick() is PushOutcome.PUSH_ERROR
    assert p.controller is None and p.errors == {"push:TypeError": 1}
    w.lookup_error = ConnectionError("GCS unreachable")
    assert p.tick() is PushOutcome.LOOKUP_ERROR
    assert p.errors == {"push:TypeError": 1, "lookup:ConnectionError": 1}


def test_with_real_asyncio_futures() -> None:
    """The deployment hands the pusher ``asyncio`` futures of the actor call."""

    async def run() -> list[PushOutcome]:
        loop = asyncio.get_running_loop()
        w = World()
        futures: list[asyncio.Future[None]] = []

        def send(handle: Any, snap: ReplicaSnapshot) -> asyncio.Future[None]:
            futures.append(loop.create_future())
            return futures[-1]

        p = SnapshotPusher(w.build, w.lookup, send, heartbeat_s=0.0)
        out = [p.tick(), p.tick()]
        futures[0].set_exception(RuntimeError("actor died"))
        out.append(p.tick())
        futures[1].cancel()
        out.append(p.tick())
        assert p.errors == {"push:RuntimeError": 2}
        assert w.lookups == 3
        return out

    assert asyncio.run(run()) == [PushOutcome.PUSHED, PushOutcome.BUSY, PushOutcome.PUSHED,
                                  PushOutcome.PUSHED]  # fmt: skip
