"""The autoscaling policy answers from a non-blocking cache of the Plan's targets,
and holds the current count on any error."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from orchestrator.autoscale import TargetCache, plan_policy


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _ctx(current: int = 2) -> SimpleNamespace:
    return SimpleNamespace(
        policy_state={}, current_num_replicas=current, deployment_name="llm",
        capacity_adjusted_min_replicas=1, capacity_adjusted_max_replicas=4,
    )  # fmt: skip


def test_holds_until_the_answer_arrives_then_follows_the_plan() -> None:
    clock, fetches = _Clock(), []

    def start() -> Future[Mapping[str, int]]:
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

    def start() -> Future[Mapping[str, int]]:
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

    broken = _Broken(lambda: Future())
    with caplog.at_level(logging.ERROR, logger="cascade.autoscale"):
        for _ in range(3):
            n, state = plan_policy(_ctx(current=3), broken)
            assert (n, state["source"]) == (3, "hold: policy error")
    assert broken.policy_errors == 3
    assert len([r for r in caplog.records if "autoscaling policy failed" in r.message]) == 1

    answered: Future[Mapping[str, int]] = Future()
    answered.set_result({"llm": 2})
    cache = TargetCache(lambda: answered)
    cache.get("llm")
    bad_ctx = _ctx(current=2)
    bad_ctx.capacity_adjusted_max_replicas = None  # int(None) inside the policy
    assert plan_policy(bad_ctx, cache) == (2, {"source": "hold: policy error"})
    assert cache.policy_errors == 1


def test_a_garbage_answer_from_the_controller_is_a_failed_fetch_not_a_target() -> None:
    """Injected: the controller answers NaN / text targets. Serve sees the last good
    target while it is fresh, then a hold; the bad answers count as failures."""
    clock = _Clock()
    answers: list[Mapping[str, object]] = [{"llm": 3}, {"llm": float("nan")}, {"llm": "many"}]

    def start() -> Future[Mapping[str, int]]:
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

    def start() -> Future[Mapping[str, int]]:
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
    fetches[0].set_result({"llm": 4})  # the abandoned reply, late: dropped
    assert cache.get("llm") == 1
    assert plan_policy(_ctx(current=2), cache)[0] == 1
