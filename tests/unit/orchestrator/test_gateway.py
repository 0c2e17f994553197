"""The gateway: one request's decision (class → pool → hold / spill → admission →
ranking), the same object on Ray and in the simulator."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from experiments.cascade_stack import build_stack
from orchestrator.config import parse_config
from orchestrator.contracts import Plan, PoolPlan, RouterSync, SolveStatus
from orchestrator.gateway import Gateway
from orchestrator.request_info import CLASS_FIELD, request_info_from_body
from orchestrator.routing_core import RoutingCore, cascade_theta
from policies import AdmissionDecision, build_policies
from policies.admission import Admission
from policies.slo import SloClass, SloConfig
from replicas.telemetry import ReplicaSnapshot, RequestInfo
from tests.unit.policies.fakes import request, snap

SNAPS = [snap("h0", pool="h"), snap("h1", pool="h"), snap("a0", pool="a", accelerator="A100")]
CLASSES = SloConfig(
    classes=(
        SloClass(name="interactive", ttft_s=1.0, tpot_s=0.05, max_prompt_tokens=2048),
        SloClass(name="long", ttft_s=5.0, tpot_s=0.1, max_prompt_tokens=16384),
        SloClass(name="batch", ttft_s=30.0, tpot_s=0.5),
    ),
    default_class="batch",
)


def _plan(
    h_sat: float = 0.0,
    a_sat: float = 0.0,
    routing: dict[str, dict[str, float]] | None = None,
    version: int = 1,
) -> Plan:
    return Plan(
        time_s=1.0,
        version=version,
        routing=routing or {"default": {"h": 0.8, "a": 0.2}},
        pools={"h": PoolPlan(10_000, h_sat, 2), "a": PoolPlan(10_000, a_sat, 1)},
        status=SolveStatus.OPTIMAL,
    )


def _gateway(
    plan: Plan | None = None,
    *,
    admission: Admission | None = None,
    snaps: list[ReplicaSnapshot] = SNAPS,
    seed: int = 0,
    slos: SloConfig | None = None,
) -> Gateway:
    gw = Gateway(
        ["h", "a"],
        slos=slos,
        admission=admission or build_policies({"admission": "always"}).admission,
        rng=np.random.default_rng(seed),
        clock=lambda: 1.0,
    )
    gw.set_snapshots(snaps)
    gw.set_plan(plan)
    return gw


def test_pool_split_follows_the_plan_weights() -> None:
    gw = _gateway(_plan())
    pools = [gw.decide(request()).pool for _ in range(2000)]
    assert pools.count("h") / len(pools) == pytest.approx(0.8, abs=0.03)
    gw.set_plan(_plan(routing={"default": {"h": 0.0, "a": 1.0}}, version=2))
    assert {gw.decide(request()).pool for _ in range(50)} == {"a"}


def test_before_any_plan_the_split_is_proportional_to_live_replicas() -> None:
    gw = _gateway(None)
    pools = [gw.decide(request()).pool for _ in range(3000)]
    assert pools.count("h") / len(pools) == pytest.approx(2 / 3, abs=0.03)
    # a pool without live replicas gets nothing, whatever its weight
    gw = _gateway(_plan(routing={"default": {"h": 0.5, "a": 0.5}}), snaps=[SNAPS[2]])
    assert {gw.decide(request()).pool for _ in range(30)} == {"a"}


def test_a_held_pool_spills_to_the_other_and_is_not_deferred() -> None:
    gw = _gateway(_plan(h_sat=1.3))  # h holds new prefills; a does not
    decisions = [gw.decide(request()) for _ in range(200)]
    assert all(d.admit and d.pool == "a" for d in decisions)
    assert sum(d.spilled_from == "h" for d in decisions) == gw.spilled > 100
    assert gw.deferred == gw.rejected == 0


def test_backpressure_never_sheds_by_itself_when_every_pool_is_held() -> None:
    """Every pool held: the request stays on its pool and admission alone decides
    (issue 14 §3: shed only when the admission policy says so)."""
    gw = _gateway(_plan(h_sat=1.5, a_sat=1.1))
    decisions = [gw.decide(request()) for _ in range(50)]
    assert all(d.admit and d.spilled_from is None for d in decisions)
    assert gw.held_all == 50 and gw.deferred == gw.rejected == gw.spilled == 0
    # the other pool held, but without live replicas: still nowhere to spill to
    gw = _gateway(_plan(h_sat=1.5), snaps=SNAPS[:2])
    d = gw.decide(request())
    assert d.admit and d.pool == "h" and gw.held_all == 1
    # an admission that refuses still sheds, with its own reason
    refuse = build_policies({"admission": {"type": "queue_cap", "params": {
        "max_waiting_per_replica": 0, "action": "defer"}}}).admission  # fmt: skip
    gw = _gateway(_plan(h_sat=1.5, a_sat=1.1), admission=refuse)
    d = gw.decide(request())
    assert d.outcome == "deferred" and "queued" in d.admission.reason and gw.deferred == 1
    # saturation just below 1 holds nothing
    gw = _gateway(_plan(h_sat=0.99, a_sat=0.99))
    assert all(gw.decide(request()).admit for _ in range(20))
    assert gw.held_all == 0


def test_class_by_prompt_length_explicit_class_and_default_fallback() -> None:
    gw = _gateway(_plan(), slos=CLASSES)
    assert gw.decide(request(prompt=100)).slo_class == "interactive"
    assert gw.decide(request(prompt=2048)).slo_class == "interactive"
    assert gw.decide(request(prompt=2049)).slo_class == "long"  # the tightest bound that fits
    assert gw.decide(request(prompt=50_000)).slo_class == "batch"  # longer than every bound
    assert gw.decide(request(prompt=100), "batch").slo_class == "batch"  # explicit wins
    assert gw.decide(request(prompt=100), "nope").slo_class == "interactive"  # unknown: ignored
    # a class the Plan does not list is split with the default class's weights
    gw.set_plan(_plan(routing={"batch": {"h": 0.0, "a": 1.0}}, version=2))
    assert {gw.decide(request(prompt=100)).pool for _ in range(30)} == {"a"}
    # per-class arrivals for the controller
    counts, _ = gw.take_arrivals()
    assert counts["interactive"][0] == 33 and counts["batch"][0] == 2
    assert gw.take_arrivals()[0] == {}


def test_class_from_the_body_field_and_the_ingress_header() -> None:
    body = type("B", (), {"prompt": "x" * 400, "max_tokens": 9, CLASS_FIELD: "batch"})()
    assert request_info_from_body(body, "r", slos=CLASSES).slo_class == "batch"
    short = type("S", (), {"prompt": "x" * 400, "max_tokens": 9})()
    assert request_info_from_body(short, "r", slos=CLASSES).slo_class == "interactive"
    # the ingress passes the x-cascade-class header, which wins over the body field
    info = request_info_from_body(body, "r", slos=CLASSES, requested_class="long")
    assert info.slo_class == "long"
    assert request_info_from_body(short, "r").slo_class == "default"  # no classes: default


def test_a_failing_admission_policy_admits_and_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Injected: an admission policy that raises on every request. Seen: every
    request admitted to its pool (the fallback), counted, the error logged once."""

    class Broken(Admission):
        def decide(self, *a: Any, **k: Any) -> AdmissionDecision:
            raise ZeroDivisionError("bad telemetry")

    gw = _gateway(_plan(), admission=Broken())
    with caplog.at_level(logging.ERROR, logger="cascade.gateway"):
        decisions = [gw.decide(request()) for _ in range(3)]
    assert all(d.admit and "error" in d.admission.reason for d in decisions)
    assert all(d.pool in gw.pools for d in decisions)
    assert gw.admission_errors == 3 and gw.rejected == 0
    assert len([r for r in caplog.records if "admission policy failed" in r.message]) == 1


def test_admission_uses_the_configured_slos_and_refusals_are_counted() -> None:
    cfg = parse_config(
        {
            "pools": [{"name": "h", "accelerator": "H100"}],
            "slos": {"default_class": "tight", "classes": [
                {"name": "tight", "ttft_s": 0.001, "tpot_s": 0.0001},
                {"name": "loose", "ttft_s": 100.0, "tpot_s": 10.0, "max_prompt_tokens": 64},
            ]},
            "admission": {"type": "slo_feasible", "params": {"action": "reject"}},
        }
    )  # fmt: skip
    gw = Gateway.from_config(cfg, rng=np.random.default_rng(0), clock=lambda: 1.0)
    gw.set_snapshots([snap("h0", pool="h", waiting=20, waiting_prefill_tokens=40_000)])
    tight = gw.decide(request(prompt=512))
    assert tight.slo_class == "tight" and tight.outcome == "rejected" and gw.rejected == 1
    assert gw.decide(request(prompt=32)).admit  # the configured loose class, not built-ins


def test_ranking_falls_back_to_least_outstanding_instead_of_dropping() -> None:
    class FiltersAll:
        def rank(self, *a: Any) -> list[int]:
            return []

        def on_routed(self, *a: Any) -> None: ...
        def on_completed(self, *a: Any) -> None: ...

    gw = Gateway(["h"], router=FiltersAll(), rng=np.random.default_rng(0), clock=lambda: 1.0)
    gw.set_snapshots(SNAPS[:2])
    decision, view, order = gw.route(request(), {"h0": 4, "h1": 1})
    assert decision.admit and view is not None and order == [1, 0]
    assert gw.rank_fallbacks == 1


def test_a_routing_policy_that_raises_falls_back_counts_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Injected: a router whose ``rank`` and hooks raise on every request. Seen:
    every request ranked least-outstanding first (the fallback), counted, each
    failing callback logged once."""

    class Raises:
        def rank(self, *a: Any) -> list[int]:
            raise ZeroDivisionError("token-id prompt")  # Ray's PrefixCacheAffinityRouter bug

        def on_routed(self, *a: Any) -> None:
            raise KeyError("x")

        def on_completed(self, *a: Any) -> None:
            raise KeyError("x")

    gw = Gateway(["h"], router=Raises(), rng=np.random.default_rng(0), clock=lambda: 1.0)
    gw.set_snapshots(SNAPS[:2])
    with caplog.at_level(logging.ERROR, logger="cascade.gateway"):
        for _ in range(3):
            decision, _view, order = gw.route(request(), {"h0": 4, "h1": 1})
            assert decision.admit and order == [1, 0]
            gw.on_routed("h1", decision.request)
            gw.on_completed("h1", decision.request)
    assert gw.rank_fallbacks == 3
    messages = [r.message for r in caplog.records]
    assert len([m for m in messages if "routing policy failed" in m]) == 1
    assert len([m for m in messages if "on_routed hook failed" in m]) == 1
    assert len([m for m in messages if "on_completed hook failed" in m]) == 1


# ---- the same decision in the simulator's stack and on Ray ----------------------------
CONFIG = parse_config(
    {
        "pools": [
            {"name": "llm-h100", "accelerator": "H100", "min_replicas": 1, "max_replicas": 4},
            {"name": "llm-a100", "accelerator": "A100", "min_replicas": 1, "max_replicas": 4},
        ],
        "slos": {"default_class": "batch", "classes": [
            {"name": "interactive", "ttft_s": 1.0, "tpot_s": 0.01, "max_prompt_tokens": 1024},
            {"name": "batch", "ttft_s": 10.0, "tpot_s": 0.2},
        ]},
        "router": "cascade",
        "admission": {"type": "slo_feasible", "params": {"min_probability": 0.3}},
        "backpressure": {"type": "uncertainty", "params": {"sigma_high_s": 0.02,
                                                           "sigma_low_s": 0.015}},
    }
)  # fmt: skip


def _pool_snaps(t: float, rng: np.random.Generator) -> list[ReplicaSnapshot]:
    out = []
    # the A100 pool's decode σ often crosses the backpressure threshold, the H100's
    # sometimes: holds and spills occur
    pools = (("llm-h100", "H100", 0.012, 0.022), ("llm-a100", "A100", 0.03, 0.04))
    for pool, acc, itl, sd in pools:
        for i in range(3):
            out.append(
                snap(
                    f"{pool}-{i}", pool=pool, accelerator=acc, time_s=t,
                    running=int(rng.integers(0, 40)), waiting=int(rng.integers(0, 5)),
                    waiting_prefill_tokens=int(rng.integers(0, 4000)),
                    kv_used=int(rng.integers(0, 900)),
                    itl=(itl, float(rng.uniform(0.002, sd))),
                    prefill_step=(8 * itl, float(rng.uniform(0.01, 0.05))),
                )
            )  # fmt: skip
    return out


def test_the_simulator_stack_and_the_ray_ingress_and_router_decide_alike() -> None:
    """The simulator's cascade stack (controller + gateway on a virtual clock)
    and the Ray adapters' cores (the ingress's Gateway, fed by ``sync``;
    the pool router's RoutingCore) built from the same config, given the same
    Plan, snapshots and cascade fit, make the same decision for every request:
    class, pool, hold / spill, admit / defer / reject, reason, and ranking."""
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    stack = build_stack(CONFIG, np.random.default_rng(7), clock)
    ingress = Gateway.from_config(CONFIG, rng=np.random.default_rng(7), clock=clock)
    router = RoutingCore(Gateway.from_config(CONFIG), rng=np.random.default_rng(11), clock=clock)
    stack_rank_rng = np.random.default_rng(11)
    rng = np.random.default_rng(3)
    held_seen = 0  # ticks where a pool was held
    moved = 0  # requests refused on a pool that is not held, admitted on another
    for tick in range(1, 9):
        now[0] = float(tick)
        snaps = _pool_snaps(now[0], rng)
        stack.gateway.set_snapshots(snaps)
        plan = stack.tick(now[0], snaps)
        held_seen += any(pp.saturation >= 1 for pp in plan.pools.values())
        # what the controller actor publishes, as the Ray ingress and routers get it
        state = RouterSync(now[0], tuple(snaps), plan, stack.controller.cascade.to_dict())
        ingress.sync(state)
        router.sync(state)
        assert cascade_theta(ingress.cascade) == cascade_theta(stack.controller.cascade)
        for k in range(40):
            req = RequestInfo(f"r{tick}-{k}", int(rng.integers(16, 3000)), 256)
            d_sim = stack.gateway.decide(req)
            d_ray = ingress.decide(req)
            assert (d_sim.slo_class, d_sim.pool, d_sim.spilled_from, d_sim.admission) == (
                d_ray.slo_class, d_ray.pool, d_ray.spilled_from, d_ray.admission
            )  # fmt: skip
            src = d_sim.spilled_from
            moved += src is not None and plan.pools[src].saturation < 1.0
            if not d_sim.admit:
                continue
            ids = [s.replica_id for s in snaps if s.pool == d_sim.pool]
            view = stack.gateway.pool_view(d_sim.pool)
            assert view is not None and list(view.replica_ids) == ids
            stack.gateway.rng, saved = stack_rank_rng, stack.gateway.rng
            sim_order = stack.gateway.rank(d_sim.request, view)
            stack.gateway.rng = saved
            ray_order = router.rank(ids, d_ray.request, d_ray.pool)
            assert sim_order == ray_order
    assert set(stack.controller.traffic.rates()) == {"interactive", "batch"}
    # the inputs exercised holds, spills and admission refusals, not only admits
    gw = stack.gateway
    assert held_seen and gw.spilled and gw.rejected + moved > 0 and gw.rejected < gw.decisions


def test_a_request_refused_on_its_pool_is_admitted_on_another_that_takes_it() -> None:
    """Shed only when no live pool admits: the Plan's split and the per-replica
    admission decide together (issue 14 §3)."""
    full = [snap("h0", pool="h", waiting=5), snap("h1", pool="h", waiting=5)]
    cap = build_policies(
        {"admission": {"type": "queue_cap", "params": {"max_waiting_per_replica": 1}}}
    ).admission
    only_h = _plan(routing={"default": {"h": 1.0, "a": 0.0}})
    gw = _gateway(only_h, admission=cap, snaps=[*full, snap("a0", pool="a")])
    d = gw.decide(request())
    assert d.admit and d.pool == "a" and d.spilled_from == "h" and gw.spilled == 1
    assert gw.rejected == gw.deferred == 0
    # every pool full: shed, and counted once
    gw = _gateway(only_h, admission=cap, snaps=[*full, snap("a0", pool="a", waiting=5)])
    d = gw.decide(request())
    assert not d.admit and d.pool == "h" and d.outcome == "rejected" and gw.rejected == 1


def test_a_prediction_is_made_from_the_state_its_request_was_decided_on() -> None:
    """``prediction_inputs`` at the decision, ``predict_from`` later (the Ray
    ingress does it after the request ends, off its path): the same quantiles
    as predicting at once, even after a sync brought a busier pool; and no
    inputs without telemetry for the pool."""
    gw = Gateway(["h"], router=build_policies({"router": "cascade"}).router, clock=lambda: 1.0)
    gw.set_snapshots([snap("h0", pool="h"), snap("h1", pool="h")])
    req = request(prompt=900, max_tokens=200)
    now = gw.predict_for(req, "h")
    inputs = gw.prediction_inputs(req, "h")
    assert now is not None and inputs is not None
    # a sync lands before the prediction is made: both replicas are now queued
    busy = [
        snap(r, pool="h", running=30, waiting=12, waiting_prefill_tokens=40_000)
        for r in ("h0", "h1")
    ]
    gw.set_snapshots(busy)
    later = gw.predict_from(inputs)
    assert later is not None
    np.testing.assert_allclose(later.corrected, now.corrected)
    after_sync = gw.predict_for(req, "h")
    assert after_sync is not None and after_sync.corrected[0, -1] > now.corrected[0, -1]
    # a view built since the sync is captured as is (no rebuild)
    gw.pool_view("h")
    assert gw.prediction_inputs(req, "h").view is gw.pool_view("h")  # type: ignore[union-attr]
    assert gw.prediction_inputs(req, "a") is None  # no such pool: no telemetry


def test_a_prediction_without_an_outcome_is_discarded_not_kept() -> None:
    """``predict_for`` logs a prediction per request until its outcome. The
    ingress's other exits (an error, a client that left, a unary answer: no TTFT)
    discard it; before, each stayed in ``pending`` until 100,000 newer ones
    pushed it out (~1 KiB each)."""
    from orchestrator.calibration import Outcome

    gw = _gateway(_plan())
    reqs = [request(prompt=300, max_tokens=64, rid=f"ingress-{i}") for i in range(50)]
    for r in reqs:
        assert gw.predict_for(r, "h") is not None
    assert len(gw.predictor.pending) == 50
    for r in reqs[:40]:  # failed, cancelled or unary
        gw.predictor.discard(r.request_id)
    gw.predictor.discard("never-predicted")  # unknown ids are ignored
    for r in reqs[40:]:
        gw.predictor.observe(r, Outcome(0.2, 1.0, 20))
    assert gw.predictor.pending == {}
    assert gw.predictor.calibration.report()["calibration_n"]["corrected"] == 10  # scored
