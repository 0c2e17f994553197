"""One controller call per period for every consumer in a process (``SyncHub``)."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future

import pytest

from orchestrator.contracts import RouterReport, RouterSync
from orchestrator.sync_hub import SyncHub


def _report(decisions: int) -> RouterReport:
    return RouterReport(
        plan_version=0, cascade_theta=(), decisions=decisions, fallbacks=0, routed={},
        view_age_s=0.0,
    )  # fmt: skip


def _answer(t: float) -> RouterSync:
    return RouterSync(time_s=t, snapshots=(), plan=None, cascade=None)


class Controller:
    """Records each call's reports; the test completes the futures."""

    def __init__(self) -> None:
        self.calls: list[dict[str, RouterReport]] = []
        self.futures: list[Future[RouterSync]] = []
        self.down = False

    def start(self, reports: Mapping[str, RouterReport]) -> Future[RouterSync]:
        if self.down:
            raise ValueError("Failed to look up actor")
        self.calls.append(dict(reports))
        self.futures.append(Future())
        return self.futures[-1]


def test_consumers_share_one_call_per_period_and_apply_each_answer_once() -> None:
    clock, ctl = [0.0], Controller()
    hub = SyncHub(ctl.start, period_s=0.25, clock=lambda: clock[0])
    hub.report("router-a", _report(1))
    hub.report("router-b", _report(7))
    # the ingress and two routers poll at twice the period for 1 s
    seen: dict[str, int] = {"ingress": 0, "router-a": 0, "router-b": 0}
    applied: dict[str, list[float]] = {c: [] for c in seen}
    for k in range(8):
        clock[0] = 0.125 * k
        for consumer in seen:
            state, seq = hub.poll()
            if state is not None and seq != seen[consumer]:
                seen[consumer] = seq
                applied[consumer].append(state.time_s)
        if ctl.futures and not ctl.futures[-1].done():
            ctl.futures[-1].set_result(_answer(clock[0]))  # answered within the tick
    assert len(ctl.calls) == 4  # one per 250 ms, not one per consumer per poll
    assert ctl.calls[0] == {"router-a": _report(1), "router-b": _report(7)}
    # every consumer applied every answer exactly once, the same answers
    assert applied["ingress"] == applied["router-a"] == applied["router-b"]
    assert applied["ingress"] == [0.0, 0.25, 0.5, 0.75]


def test_a_pending_call_is_never_doubled_and_a_failure_keeps_the_last_answer() -> None:
    clock, ctl, resets = [0.0], Controller(), []
    hub = SyncHub(ctl.start, on_failure=lambda: resets.append(1), period_s=0.25,
                  clock=lambda: clock[0])  # fmt: skip
    assert hub.poll() == (None, 0)
    ctl.futures[0].set_result(_answer(1.0))
    clock[0] = 1.0  # the controller is slow: the next call stays pending
    state, seq = hub.poll()
    assert (state, seq) == (_answer(1.0), 1) and len(ctl.calls) == 2
    clock[0] = 5.0
    assert hub.poll() == (_answer(1.0), 1) and len(ctl.calls) == 2  # still pending
    ctl.futures[1].set_exception(RuntimeError("actor died"))
    clock[0] = 5.1
    ctl.down = True  # and now it cannot be found
    assert hub.poll() == (_answer(1.0), 1)  # the last answer, never an exception
    assert hub.failures == 2 and len(resets) == 1  # one poll, one reset
    ctl.down = False
    clock[0] = 5.4
    hub.poll()
    ctl.futures[2].set_result(_answer(5.4))
    assert hub.poll() == (_answer(5.4), 2)


def test_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="period_s"):
        SyncHub(Controller().start, period_s=0.0)
