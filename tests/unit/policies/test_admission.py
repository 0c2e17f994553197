"""Admission policies: decisions and Retry-After estimates."""

from __future__ import annotations

import math

import pytest

from policies import build_view
from policies.admission import (
    AlwaysAdmit,
    QueueCapAdmission,
    QueueCapParams,
    SloFeasibleAdmission,
    SloFeasibleParams,
    TokenBudgetAdmission,
    TokenBudgetParams,
)
from policies.backpressure import BackpressureState, TokenBucket
from policies.slo import SloClass
from tests.unit.policies.fakes import request, snap


def test_always_admits() -> None:
    assert AlwaysAdmit().decide(request(), build_view([], None, 0.0), 0.0).admit


def test_queue_cap_admits_while_one_replica_has_room() -> None:
    adm = QueueCapAdmission(QueueCapParams(max_waiting_per_replica=4))
    view = build_view([snap("a", waiting=9), snap("b", waiting=3)], None, 0.0)
    assert adm.decide(request(), view, 0.0).admit
    full = build_view(
        [snap("a", waiting=9), snap("b", waiting=5, waiting_prefill_tokens=10_000)], None, 0.0
    )
    d = adm.decide(request(), full, 0.0)
    assert not d.admit and not d.defer
    # least-queued replica b: 1.015 s of queue for 5 requests, 2 must leave
    assert d.retry_after_s == pytest.approx(1.015 / 5 * 2)
    empty = adm.decide(request(), build_view([], None, 0.0), 0.0)
    assert not empty.admit and empty.retry_after_s == 30.0


def test_token_budget_bucket_and_backpressure_rate() -> None:
    adm = TokenBudgetAdmission(TokenBudgetParams(prefill_tokens_per_s=1000, burst_tokens=2000))
    view = build_view([snap("a")], None, 0.0)
    assert adm.decide(request(1500), view, 0.0).admit
    d = adm.decide(request(1500), view, 0.0)  # 500 left, 1000 short at 1000/s
    assert not d.admit and d.defer and d.retry_after_s == pytest.approx(1.0)
    assert adm.decide(request(1500), view, 1.0).admit
    # a backpressure state replaces the configured rate for its pool
    pressure = BackpressureState("h100", 1.0, 1.2, 100, 0.1, 0.024, "decrease")
    d = adm.decide(request(500), view, 1.0, pressure)
    # burst = 2 s of 100/s: the 500-token prompt is charged the 200-token burst
    assert not d.admit and d.retry_after_s == pytest.approx(2.0)
    # a prompt longer than the burst is charged the burst, so it can pass
    big = TokenBudgetAdmission(TokenBudgetParams(prefill_tokens_per_s=10, burst_tokens=100))
    assert big.decide(request(10_000), view, 0.0).admit


def test_token_bucket() -> None:
    b = TokenBucket(rate=10, burst=20, now_s=0.0)
    assert b.try_take(20, 0.0) is None
    assert b.try_take(5, 0.0) == pytest.approx(0.5)
    assert b.try_take(5, 0.5) is None
    assert b.try_take(25, 10.0) == math.inf
    b.set_rate(20, 10.0)
    assert b.tokens == 20
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


SLO = {"default": SloClass(ttft_s=1.0, tpot_s=0.05)}


def test_slo_feasible_admits_defers_and_rejects() -> None:
    adm = SloFeasibleAdmission(SloFeasibleParams(min_probability=0.5, slos=SLO))
    idle = build_view([snap("a")], None, 0.0)
    d = adm.decide(request(512, 128), idle, 0.0)
    assert d.admit and d.p_meet is not None and d.p_meet > 0.9

    # a 3 s queue ahead: TTFT ≤ 1 s is hopeless now, fine once it drains
    queued = build_view([snap("a", waiting=10, waiting_prefill_tokens=30_000)], None, 0.0)
    d = adm.decide(request(512, 128), queued, 0.0)
    assert not d.admit and d.defer
    assert d.p_meet is not None and d.p_meet < 0.5
    assert d.retry_after_s is not None and 1.5 < d.retry_after_s < 3.0  # most of the queue must go
    # after that long, with the same queue drained accordingly, it is admitted
    drained = build_view(
        [snap("a", waiting=10, waiting_prefill_tokens=int(30_000 * (1 - d.retry_after_s / 3.015)))],
        None,
        0.0,
    )
    assert adm.decide(request(512, 128), drained, 0.0).admit

    # a prompt whose prefill alone exceeds the TTFT SLO: no wait helps
    d = adm.decide(request(50_000, 16), idle, 0.0)
    assert not d.admit and d.retry_after_s is None and "infeasible" in d.reason


def test_slo_feasible_uses_the_best_replica() -> None:
    adm = SloFeasibleAdmission(SloFeasibleParams(min_probability=0.5, slos=SLO))
    view = build_view(
        [snap("busy", waiting=10, waiting_prefill_tokens=30_000), snap("idle")], None, 0.0
    )
    assert adm.decide(request(512, 128), view, 0.0).admit
