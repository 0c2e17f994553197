"""RoutingCore: the pure half of the Serve router adapter (the ingress's is the
gateway: tests/unit/orchestrator/test_gateway.py)."""

import numpy as np
import pytest

from orchestrator.contracts import Plan, PoolPlan, RouterSync, SolveStatus
from orchestrator.routing_core import RoutingCore, cascade_theta, request_info_from_body
from policies import build_router
from replicas.prompts import prefix_block_hashes
from replicas.telemetry import DecayedStats, ReplicaSnapshot, RequestInfo
from uncertainty import CascadeModel

REQ = RequestInfo("r1", prompt_tokens=500, max_tokens=100)


def _snap(rid: str, pool: str = "p", running: int = 0, kv: int = 0) -> ReplicaSnapshot:
    return ReplicaSnapshot(
        replica_id=rid,
        pool=pool,
        time_s=1.0,
        running=running,
        kv_blocks_used=kv,
        kv_blocks_total=100,
        recent={"itl": DecayedStats(0.02, 0.005, 100.0, 0.5)},
    )


def test_policy_ranking_is_used_and_inflight_counts_follow_the_hooks() -> None:
    core = RoutingCore(build_router("least_outstanding"), rng=np.random.default_rng(0))
    core.update_snapshots([_snap("a"), _snap("b")])
    core.on_routed("a", REQ)
    core.on_routed("a", REQ)
    assert core.rank(["a", "b"], REQ)[0] == 1  # b has fewer in flight
    core.on_completed("a", REQ)
    core.on_completed("a", REQ)
    core.on_completed("a", REQ)  # an extra completion never goes negative
    assert core.inflight["a"] == 0


def test_the_view_is_built_once_per_snapshot_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_view (an O(replicas) loop) runs when the snapshots or the candidate
    set change, not per request; in-flight counts still count per request."""
    import orchestrator.routing_core as rc

    builds = []
    real = rc.build_view
    monkeypatch.setattr(rc, "build_view", lambda *a, **k: builds.append(1) or real(*a, **k))
    core = RoutingCore(build_router("least_outstanding"), rng=np.random.default_rng(0))
    core.update_snapshots([_snap("a"), _snap("b")])
    assert core.rank(["a", "b"], REQ) in ([0, 1], [1, 0])
    core.on_routed("a", REQ)
    assert core.rank(["a", "b"], REQ)[0] == 1
    core.on_routed("b", REQ)
    core.on_routed("b", REQ)
    assert core.rank(["a", "b"], REQ)[0] == 0
    assert len(builds) == 1
    core.rank(["b", "a"], REQ)  # another candidate set
    core.update_snapshots([_snap("a"), _snap("b", running=3)])
    core.rank(["b", "a"], REQ)
    assert len(builds) == 3


def test_a_failing_policy_falls_back_to_least_outstanding_and_is_counted() -> None:
    class Broken:
        def rank(self, *a, **k):  # type: ignore[no-untyped-def]
            raise ZeroDivisionError("bad telemetry")

        def on_routed(self, *a, **k): ...  # type: ignore[no-untyped-def]
        def on_completed(self, *a, **k): ...  # type: ignore[no-untyped-def]

    core = RoutingCore(Broken(), rng=np.random.default_rng(0))  # type: ignore[arg-type]
    core.inflight = {"a": 3, "b": 0, "c": 1}
    assert core.rank(["a", "b", "c"], REQ) == [1, 2, 0]
    assert core.rank(["a", "b", "c"], REQ) == [1, 2, 0]
    assert core.fallbacks == 2


def test_replicas_without_snapshots_are_still_ranked() -> None:
    core = RoutingCore(build_router("cascade"), rng=np.random.default_rng(0))
    order = core.rank(["new-1", "new-2"], REQ, pool="p")
    assert sorted(order) == [0, 1] and core.fallbacks == 0


def test_sync_hands_the_controller_fit_to_the_scorer_and_report_reflects_it() -> None:
    """The controller's Plan and fitted cascade model reach the router's policy
    (the uncertainty scorer predicts with the fit), and the router's report says
    what it holds and where it routed."""
    rng = np.random.default_rng(3)
    fitted = CascadeModel().update(
        rng.uniform(1e-3, 0.05, 80), rng.uniform(0, 1, 80), rng.uniform(1, 2, 80),
        rng.uniform(1e-3, 0.05, 80),
    )  # fmt: skip
    clock = [100.0]
    core = RoutingCore(
        build_router("uncertainty"), rng=np.random.default_rng(0), clock=lambda: clock[0]
    )
    fresh = core.report()
    assert fresh.plan_version == 0 and fresh.view_age_s == float("inf") and fresh.routed == {}
    core.sync(RouterSync(99.5, (_snap("a"), _snap("b")), _plan(), fitted.to_dict()))
    scorer = core.router.scorers[0][0]
    assert scorer.model is core.cascade  # type: ignore[attr-defined]
    assert cascade_theta(core.cascade) == pytest.approx(cascade_theta(fitted), abs=0)
    assert cascade_theta(fitted) != pytest.approx(cascade_theta(CascadeModel()))
    core.on_routed("b", REQ)
    core.on_routed("b", REQ)
    core.rank(["a", "b"], REQ)
    rep = core.report()
    assert rep.plan_version == 1 and rep.decisions == 1 and rep.fallbacks == 0
    assert rep.routed == {"b": 2} and rep.view_age_s == pytest.approx(0.5)
    assert rep.cascade_theta == cascade_theta(fitted)
    # a broken model state keeps the previous model; the snapshots still apply
    core.sync(RouterSync(101.0, (_snap("c"),), None, {"forgetting": 0.9}))
    assert cascade_theta(core.cascade) == cascade_theta(fitted)
    assert set(core.snapshots) == {"c"} and core.report().plan_version == 1


def test_request_info_from_openai_bodies() -> None:
    class Completion:
        prompt = "x" * 400
        max_tokens = 50

    class Chat:
        messages = ({"role": "user", "content": "y" * 40},)
        max_tokens = None
        max_completion_tokens = 7

    assert request_info_from_body(Completion(), "a").prompt_tokens == 100
    chat = request_info_from_body(Chat(), "b")
    assert chat.prompt_tokens == 10 and chat.max_tokens == 7
    ids = type("Ids", (), {"prompt": [1, 2, 3], "max_tokens": 4})()
    assert request_info_from_body(ids, "c").prompt_tokens == 3


def test_prefix_hashes_chain_blocks_and_agree_between_requests() -> None:
    """Two prompts share hash k exactly when they share their first k + 1 blocks
    (64 characters or 16 token ids); a partial block is not hashed; the hashes
    are process-independent (the values are pinned)."""
    system = "You are a helpful assistant. " * 10  # 290 characters: 4 full blocks
    a = request_info_from_body(type("A", (), {"prompt": system + "Q1?" * 40})(), "a")
    b = request_info_from_body(type("B", (), {"prompt": system + "Q2?" * 40})(), "b")
    assert len(a.prefix_hashes) == (290 + 120) // 64 == len(b.prefix_hashes)
    assert a.prefix_hashes[:4] == b.prefix_hashes[:4]
    assert a.prefix_hashes[4] != b.prefix_hashes[4]
    assert prefix_block_hashes("x" * 63) == ()
    ids = prefix_block_hashes(list(range(40)))
    assert len(ids) == 2 and ids[0] == prefix_block_hashes(list(range(16)))[0]
    assert prefix_block_hashes("a" * 64) == (0xE4B6A40FDD1A0D6C,)
    assert prefix_block_hashes(None) == ()


def _plan(saturation: float = 0.0, weights: dict[str, float] | None = None) -> Plan:
    return Plan(
        time_s=1.0,
        version=1,
        routing={"default": weights or {"h": 1.0, "a": 0.0}},
        pools={"h": PoolPlan(10_000, saturation, 1), "a": PoolPlan(10_000, 0.0, 1)},
        status=SolveStatus.OPTIMAL,
    )


def test_replicas_gone_for_the_ttl_are_forgotten_so_churn_stays_bounded() -> None:
    """Counts are kept per replica id; a replica absent from the snapshots and
    not routed to for ``REPLICA_TTL_S`` (replaced, its node lost) is dropped, so
    1,000 replicas replaced one by one leave only the recent ones behind."""
    from orchestrator.routing_core import REPLICA_TTL_S

    clock = [0.0]
    core = RoutingCore(build_router("least_outstanding"), rng=np.random.default_rng(0),
                       clock=lambda: clock[0])  # fmt: skip
    for k in range(1000):  # one replica replaced every minute, a request on each
        clock[0] = 60.0 * k
        core.update_snapshots([_snap(f"r{k}"), _snap("steady")])
        core.on_routed(f"r{k}", REQ)
        core.on_routed("steady", REQ)
        core.on_completed("steady", REQ)
    kept = int(REPLICA_TTL_S // 60) + 1  # replicas seen within the TTL (and "steady")
    assert len(core.inflight) == len(core.routed) == kept + 1
    assert core.routed["steady"] == 1000 and core.inflight["steady"] == 0
    assert "r0" not in core.routed and core.routed["r999"] == 1
    core.on_completed("r0", REQ)  # a late completion of a forgotten replica
    assert "r0" not in core.inflight
    # a replica routed to before its first snapshot is kept while it is routed to
    clock[0] += REPLICA_TTL_S / 2
    core.on_routed("fresh", REQ)
    clock[0] += REPLICA_TTL_S / 2 + 1
    core.update_snapshots([_snap("steady")])
    assert core.routed.get("fresh") == 1 and "r999" not in core.routed
