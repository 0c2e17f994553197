"""The autoscaling policy answers from a non-blocking cache of the Plan's targets,
and holds Serve's standing target on any error."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from orchestrator.autoscale import TargetCache, Views, plan_policy, report_view

_REPLIES: list[Future[Mapping[str, int]]] = []  # _start_recorded's fetches


def _start_recorded(views: Views) -> Future[Mapping[str, int]]:
    """Module level: cloudpickle pickles it by reference (a closure over Futures
    could not be pickled, and the policy's real fetch has none)."""
    _REPLIES.append(Future())
    return _REPLIES[-1]


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _ctx(current: int = 2, target: int | None = None) -> SimpleNamespace:
    """A Serve ``AutoscalingContext`` stand-in: ``current`` RUNNING replicas and a
    standing ``target`` (Ray 2.60 always sets it; None: an older Serve without it)."""
    ctx = SimpleNamespace(
        policy_state={}, current_num_replicas=current, deployment_name="llm",
        capacity_adjusted_min_replicas=1, capacity_adjusted_max_replicas=4,
    )  # fmt: skip
    if target is not None:
        ctx.target_num_replicas = target
    return ctx


def test_holds_until_the_answer_arrives_then_follows_the_plan() -> None:
    clock, fetches = _Clock(), []

    def start(views: Views) -> Future[Mapping[str, int]]:
        fetches.append(Future())
        return fetches[-1]

    cache = TargetCache(start, clock=clock, refresh_s=1.0, stale_s=30.0)
    n, state = plan_policy(_ctx(), cache)
    assert (n, state["source"]) == (2, "hold: no recent answer from the controller")
    assert len(fetches) == 1  # one fetch started, not waited for
    clock.t = 0.1
    plan_policy(_ctx(), cache)
    assert len(fetches) == 1  # still pending: no second request
    fetches[0].set_result({"llm": 7})
    n, state = plan_policy(_ctx(), cache)
    assert (n, state["source"]) == (4, "plan")  # 7 clipped to the deployment's max
    clock.t = 0.5
    plan_policy(_ctx(), cache)
    assert len(fetches) == 1  # at most one request per refresh_s
    clock.t = 1.2
    plan_policy(_ctx(), cache)
    assert len(fetches) == 2


def test_a_controller_that_fails_or_goes_silent_means_hold() -> None:
    clock = _Clock()
    futures: list[Future[Mapping[str, int]]] = []

    def start(views: Views) -> Future[Mapping[str, int]]:
        if len(futures) >= 2:
            raise ValueError("Failed to look up actor")  # controller gone
        futures.append(Future())
        return futures[-1]

    cache = TargetCache(start, clock=clock, refresh_s=1.0, stale_s=5.0)
    cache.get("llm")
    futures[0].set_result({"llm": 3})
    assert cache.get("llm") == 3
    clock.t = 1.5
    assert cache.get("llm") == 3  # the answer is still fresh; a new fetch starts
    futures[1].set_exception(RuntimeError("actor died"))
    clock.t = 3.0
    assert cache.get("llm") == 3 and cache.failures == 2  # failed answer + failed lookup
    clock.t = 6.0
    assert cache.get("llm") is None  # older than stale_s: hold
    n, state = plan_policy(_ctx(current=2), cache)
    assert n == 2 and state["source"].startswith("hold")
    assert cache.get("other-pool") is None


def test_a_policy_that_raises_holds_the_count_counts_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Injected: the cache raises on every read, then a context Serve filled badly.
    Serve sees: the current replica count (a hold), never an exception."""

    class _Broken(TargetCache):
        def get(self, pool: str) -> int | None:
            raise RuntimeError("injected")

    broken = _Broken(lambda views: Future())
    with caplog.at_level(logging.ERROR, logger="cascade.autoscale"):
        for _ in range(3):
            n, state = plan_policy(_ctx(current=3), broken)
            assert (n, state["source"]) == (3, "hold: policy error")
    assert broken.policy_errors == 3
    assert len([r for r in caplog.records if "autoscaling policy failed" in r.message]) == 1

    answered: Future[Mapping[str, int]] = Future()
    answered.set_result({"llm": 2})
    cache = TargetCache(lambda views: answered)
    cache.get("llm")
    bad_ctx = _ctx(current=2)
    bad_ctx.capacity_adjusted_max_replicas = None  # int(None) inside the policy
    assert plan_policy(bad_ctx, cache) == (2, {"source": "hold: policy error"})
    assert cache.policy_errors == 1


def test_a_policy_error_reaches_the_controller_with_the_next_fetch() -> None:
    """Injected: the policy's context breaks after the first answer. Seen by the
    controller (the views a fetch carries, shown in ``status()["autoscaler"]``):
    the hold, its source and the error count, so an operator sees it on Ray."""
    clock = _Clock()
    sent: list[dict[str, object]] = []

    def fetch(views: Mapping[str, object]) -> Future[Mapping[str, int]]:
        sent.append(dict(views))
        done: Future[Mapping[str, int]] = Future()
        done.set_result({"llm": 2})
        return done

    cache = TargetCache(fetch, clock=clock)
    assert plan_policy(_ctx(current=2), cache)[0] == 2
    bad_ctx = _ctx(current=2)
    bad_ctx.capacity_adjusted_max_replicas = None  # int(None) inside the policy
    for _ in range(2):  # the first error is noted after this call's fetch left
        clock.t += 5.0  # a fetch is due
        assert plan_policy(bad_ctx, cache) == (2, {"source": "hold: policy error"})
    assert sent[-1]["llm"] == {"returned": 2, "source": "hold: policy error", "policy_errors": 1}


def test_a_garbage_answer_from_the_controller_is_a_failed_fetch_not_a_target() -> None:
    """Injected: the controller answers NaN / text targets. Serve sees the last good
    target while it is fresh, then a hold; the bad answers count as failures."""
    clock = _Clock()
    answers: list[Mapping[str, object]] = [{"llm": 3}, {"llm": float("nan")}, {"llm": "many"}]

    def start(views: Views) -> Future[Mapping[str, int]]:
        f: Future[Mapping[str, int]] = Future()
        f.set_result(answers.pop(0) if answers else {"llm": float("nan")})  # type: ignore[arg-type]
        return f

    cache = TargetCache(start, clock=clock, refresh_s=1.0, stale_s=5.0)
    cache.get("llm")
    assert plan_policy(_ctx(current=2), cache)[0] == 3
    for t in (1.0, 2.0, 3.0):
        clock.t = t
        assert plan_policy(_ctx(current=2), cache)[0] == 3  # the last good answer
    assert cache.failures >= 2
    clock.t = 9.0
    cache.get("llm")
    n, state = plan_policy(_ctx(current=2), cache)
    assert n == 2 and state["source"].startswith("hold")


def test_a_fetch_that_never_answers_is_abandoned_and_asked_again() -> None:
    """Injected: the controller never answers one request (a hung call, a reply lost
    with a restarted actor). Serve sees a hold while it waits, then the next
    fetch's answer: the lost reply does not freeze the pool's count."""
    clock, fetches = _Clock(), []

    def start(views: Views) -> Future[Mapping[str, int]]:
        fetches.append(Future())
        return fetches[-1]

    cache = TargetCache(start, clock=clock, refresh_s=1.0, stale_s=30.0, pending_timeout_s=10.0)
    cache.get("llm")
    for t in (2.0, 5.0, 9.9):
        clock.t = t
        assert cache.get("llm") is None and len(fetches) == 1  # still waiting, no pile-up
    clock.t = 10.5
    cache.get("llm")
    assert len(fetches) == 2 and cache.failures == 1  # abandoned, asked again
    fetches[1].set_result({"llm": 1})
    fetches[0].set_result({"llm": 4})  # the overdue reply, late: an older question's answer
    assert cache.get("llm") == 1
    assert plan_policy(_ctx(current=2), cache)[0] == 1


def test_a_hold_keeps_serves_standing_target_not_the_running_count() -> None:
    """Serve applies any difference between the policy's answer and its standing
    target at once (delays 0), and the RUNNING count lags the target in every
    transition. Seen: with no answer, or a policy error, the policy returns the
    standing target, so a scale-up in progress (1 running, target 2) and a drain
    in progress (2 running, target 1) both continue."""
    silent = TargetCache(lambda views: Future())
    assert plan_policy(_ctx(current=1, target=2), silent)[0] == 2
    assert plan_policy(_ctx(current=2, target=1), silent)[0] == 1
    assert plan_policy(_ctx(current=2), silent)[0] == 2  # no standing target: the count

    class _Broken(TargetCache):
        def get(self, pool: str) -> int | None:
            raise RuntimeError("injected")

    broken = _Broken(lambda views: Future())
    assert plan_policy(_ctx(current=1, target=2), broken) == (2, {"source": "hold: policy error"})


def test_a_slow_controller_still_steers_the_pool() -> None:
    """Injected: every reply takes 12 s, longer than the 10 s after which a fetch is
    overdue. Seen: an overdue fetch gets a second one beside it (never more than
    ``max_pending`` in flight) but its answer is still taken, newest question
    first: the first reply (asked at 0, answered at 12 s) sets 2, and a pin from 2
    to 1 at t = 20 s reaches the policy with the reply to the fetch asked at
    10.1 s (answered at 22.1 s, after the pin). The version that dropped overdue replies never
    took one and held the pool at its running count forever."""
    clock = _Clock()
    controller = {"llm": 2}
    flying: list[tuple[float, Future[Mapping[str, int]]]] = []

    def start(views: Views) -> Future[Mapping[str, int]]:
        flying.append((clock.t, Future()))
        return flying[-1][1]

    cache = TargetCache(start, clock=clock, refresh_s=1.0, stale_s=30.0,
                        pending_timeout_s=10.0, max_pending=4)  # fmt: skip
    seen: dict[float, int | None] = {}
    for step in range(601):  # 60 s at 0.1 s, Serve's control-loop period
        clock.t = round(step * 0.1, 1)
        if clock.t == 20.0:
            controller["llm"] = 1  # the operator pins the pool to 1
        for asked, reply in flying:
            if not reply.done() and clock.t - asked >= 12.0:
                reply.set_result(dict(controller))  # answered now, 12 s after the question
        seen[clock.t] = cache.get("llm")
        assert sum(not r.done() for _, r in flying) <= 4
    asks = [asked for asked, _ in flying]
    assert asks[:2] == [0.0, 10.1]  # a new fetch once the youngest is overdue, not before
    assert all(10.0 < b - a <= 10.2 for a, b in itertools.pairwise(asks)), asks
    assert all(v is None for t, v in seen.items() if t < 12.0)  # nothing yet: hold
    assert all(v == 2 for t, v in seen.items() if 12.0 <= t < 22.1)
    assert all(v == 1 for t, v in seen.items() if t >= 22.1)
    assert cache.failures == len(flying) - 1  # each fetch but the first was for an overdue one


def test_each_fetch_carries_what_the_policy_saw() -> None:
    """The controller's ``status()["autoscaler"]`` shows, per pool, Serve's running
    count and standing target, the answer and what the policy returned."""
    sent: list[Views] = []

    def start(views: Views) -> Future[Mapping[str, int]]:
        sent.append(views)
        f: Future[Mapping[str, int]] = Future()
        f.set_result({"llm": 3})
        return f

    clock = _Clock()
    cache = TargetCache(start, clock=clock, refresh_s=1.0)
    plan_policy(_ctx(current=2, target=2), cache)  # asks; no answer yet: holds at 2
    clock.t = 1.0
    plan_policy(_ctx(current=2, target=2), cache)  # takes 3, asks again with the view
    assert sent[0] == {}
    hold = "hold: no recent answer from the controller"
    assert sent[1] == {"llm": {"running": 2, "serve_target": 2, "answer": None,
                               "returned": 2, "source": hold}}  # fmt: skip
    clock.t = 2.0
    plan_policy(_ctx(current=2, target=3), cache)
    assert sent[2]["llm"] == {"running": 2, "serve_target": 2, "answer": 3, "returned": 3,
                              "source": "plan"}  # fmt: skip


def test_a_report_keeps_only_small_plain_values() -> None:
    """What an open read may store in the controller's status: ints, short strings
    and None under short str keys, at most 8 of them."""
    view = {"running": 2, "source": "x" * 500, "ok": True, "f": 1.5, 7: None, "obj": object()}
    assert report_view(view) == {"running": 2, "source": "x" * 80, "7": None}
    assert len(report_view({f"k{i}": i for i in range(20)})) == 8


def test_the_policy_pickles_by_value_as_serve_does_and_each_copy_starts_empty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Serve (Ray 2.60 ``AutoscalingPolicy.serialize_policy``) cloudpickles the policy
    with its module registered by value, so the module's cache travels with it.
    Seen: a process that has used the policy (an answer taken, a fetch in flight)
    still pickles it, and the copy's cache holds no answer and no fetch: the
    Serve controller never starts from the deploying process's targets."""
    cloudpickle = pytest.importorskip("cloudpickle")
    from orchestrator import autoscale

    replies = _REPLIES
    replies.clear()
    used = TargetCache(_start_recorded, refresh_s=0.0)
    used.get("llm")
    replies[0].set_result({"llm": 4})
    assert used.get("llm") == 4 and any(not r.done() for r in replies)  # answer + in flight
    monkeypatch.setattr(autoscale, "_CACHE", used)
    cloudpickle.register_pickle_by_value(autoscale)
    try:
        copy = cloudpickle.loads(cloudpickle.dumps(autoscale.plan_policy))
    finally:
        cloudpickle.unregister_pickle_by_value(autoscale)
    fresh = copy.__globals__["_CACHE"]
    assert fresh is not used and fresh.refresh_s == 0.0
    n, state = copy(_ctx(current=2, target=2))
    assert (n, state["source"]) == (2, "hold: no recent answer from the controller")
    assert used.get("llm") == 4  # the original is untouched
