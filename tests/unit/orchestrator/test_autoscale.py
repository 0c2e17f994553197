"""The autoscaling policy answers from a non-blocking cache of the Plan's targets."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from types import SimpleNamespace

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
