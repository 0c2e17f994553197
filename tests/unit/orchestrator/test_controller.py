"""Controller core: merges snapshots, fits the cascade, backpressures, plans."""

import math

import numpy as np
import pytest

from orchestrator.config import load_config
from orchestrator.contracts import SolveStatus
from orchestrator.controller import Controller
from orchestrator.estimates import ClassLoad
from replicas.telemetry import ReplicaSnapshot
from tests.builders import measured_snapshot
from uncertainty import Summary


def _snaps(t: float, seed: int = 0, **kw) -> list[ReplicaSnapshot]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    out = [measured_snapshot(f"h{i}", "llm-h100", t, 0.010, rng, **kw) for i in range(4)]
    out += [measured_snapshot(f"a{i}", "llm-a100", t, 0.020, rng, **kw) for i in range(4)]
    return out


def test_plan_prefers_the_faster_pool_and_merges_levels_exactly() -> None:
    ctl = Controller(load_config())
    snaps = _snaps(1.0)
    plan = ctl.step(1.0, snaps, {"default": ClassLoad(rate_per_s=20.0)})
    assert ctl.view is not None
    h100 = ctl.view.pools["llm-h100"]
    assert h100.replicas == ("h0", "h1", "h2", "h3")
    merged = Summary()
    for s in snaps[:4]:
        merged.merge(s.summaries["itl"])
    assert h100.metrics["itl"].n == merged.n
    assert math.isclose(h100.metrics["itl"].mean, merged.mean, rel_tol=1e-12)
    assert ctl.view.cluster["itl"].n == 8 * 2000
    assert plan.status is SolveStatus.OPTIMAL, plan.reason
    w = plan.routing["default"]
    assert math.isclose(sum(w.values()), 1.0, abs_tol=1e-6)
    assert w["llm-h100"] > w["llm-a100"]
    assert ctl.allocation is not None  # the first step also runs the allocator
    assert 2 <= plan.pools["llm-h100"].target_replicas <= 16


def test_stale_and_foreign_snapshots_are_dropped() -> None:
    ctl = Controller(load_config())
    ctl.step(1.0, _snaps(1.0))
    rng = np.random.default_rng(9)
    foreign = measured_snapshot("x0", "no-such-pool", 2.0, 0.01, rng)
    older = measured_snapshot("h0", "llm-h100", 0.5, 0.01, rng)  # older than what we hold
    ctl.step(2.0, [foreign, older])
    assert ctl.rejected_snapshots == 1
    assert ctl.view is not None and len(ctl.view.pools["llm-h100"].replicas) == 4
    plan = ctl.step(100.0, [])  # everything is now stale
    assert ctl.view.pools["llm-h100"].replicas == ()
    assert plan.status is SolveStatus.STATIC
    assert "not enough telemetry" in plan.reason


def test_cascade_model_is_fitted_from_snapshots() -> None:
    ctl = Controller(load_config())
    before = ctl.cascade.coefficients.n_eff
    for k in range(5):
        ctl.step(1.0 + k, _snaps(1.0 + k, seed=k))
    assert ctl.cascade.coefficients.n_eff > before + 30


def test_backpressure_saturates_when_decode_sigma_is_high() -> None:
    ctl = Controller(load_config())  # default: uncertainty backpressure, σ_high 20 ms
    calm = ctl.step(1.0, _snaps(1.0, sigma_scale=0.1))
    assert calm.pools["llm-h100"].saturation < 1.0
    plan = calm
    for k in range(2, 30):
        plan = ctl.step(float(k), _snaps(float(k), seed=k, sigma_scale=2.0))
    assert plan.pools["llm-a100"].saturation >= 1.0
    assert (
        plan.pools["llm-a100"].admission_token_budget
        < calm.pools["llm-a100"].admission_token_budget
    )


def test_optimizer_disabled_gives_static_proportional_routing() -> None:
    cfg = load_config()
    cfg = cfg.model_copy(update={"optimizer": cfg.optimizer.model_copy(update={"enabled": False})})
    plan = Controller(cfg).step(1.0, _snaps(1.0)[:6])  # 4 H100 + 2 A100 replicas
    assert plan.status is SolveStatus.STATIC
    assert plan.routing["default"] == pytest.approx({"llm-h100": 4 / 6, "llm-a100": 2 / 6})


def test_allocator_sets_replica_targets_from_demand() -> None:
    cfg = load_config()  # pools: min 2, max 16, initial 8 each
    low, high = Controller(cfg), Controller(cfg)
    p_low = low.step(1.0, _snaps(1.0), {"default": ClassLoad(rate_per_s=0.5)})
    p_high = high.step(1.0, _snaps(1.0), {"default": ClassLoad(rate_per_s=400.0)})
    assert low.allocation is not None and high.allocation is not None
    t_low = sum(p.target_replicas for p in p_low.pools.values())
    t_high = sum(p.target_replicas for p in p_high.pools.values())
    assert t_low < 16 < t_high, (t_low, t_high)
    for plan in (p_low, p_high):
        for name, pp in plan.pools.items():
            pool = cfg.pool(name)
            assert pool.min_replicas <= pp.target_replicas <= pool.max_replicas


def test_operator_pin_overrides_the_allocator_and_is_validated() -> None:
    ctl = Controller(load_config())
    ctl.pin("llm-a100", 5)
    plan = ctl.step(1.0, _snaps(1.0), {"default": ClassLoad(rate_per_s=400.0)})
    assert plan.pools["llm-a100"].target_replicas == 5
    ctl.pin("llm-a100", None)
    plan = ctl.step(100.0, _snaps(100.0), {"default": ClassLoad(rate_per_s=400.0)})
    assert plan.pools["llm-a100"].target_replicas != 5
    with pytest.raises(ValueError, match="unknown pool"):
        ctl.pin("llm-v100", 2)
    with pytest.raises(ValueError, match=r"outside \[2, 16\]"):
        ctl.pin("llm-h100", 1)


def test_per_class_traffic_from_reported_arrivals_drives_the_plan() -> None:
    """The gateway's per-class tallies (``report_arrivals``) are the optimizer's
    λ_c: the same feed on Ray (the ingress, every second) and in the simulator."""
    cfg = load_config()
    low, high = Controller(cfg), Controller(cfg)
    for t in range(1, 6):
        low.report_arrivals({"default": (1, 800.0, 120.0)}, 1.0, float(t))
        high.report_arrivals({"default": (400, 800.0, 120.0)}, 1.0, float(t))
    loads = high.traffic.loads()["default"]
    assert loads.rate_per_s == pytest.approx(400.0)
    assert (loads.prompt_tokens, loads.output_tokens) == (800.0, 120.0)
    p_low, p_high = low.step(6.0, _snaps(6.0)), high.step(6.0, _snaps(6.0))
    t_low = sum(p.target_replicas for p in p_low.pools.values())
    t_high = sum(p.target_replicas for p in p_high.pools.values())
    assert t_low < t_high, (t_low, t_high)
    # a checkpoint round trip keeps the estimate
    arrivals = {c: est.to_dict() for c, est in high.traffic.arrivals.items()}
    again = Controller(cfg)
    again.traffic.load_state(arrivals, high.traffic.shapes)
    assert again.traffic.rates() == pytest.approx(high.traffic.rates())


def test_garbage_snapshots_are_rejected_counted_and_the_plan_stays_valid() -> None:
    """NaN / negative / inconsistent / future-stamped snapshots and non-snapshots
    (what unpickling lets through: it skips ``__post_init__``) are rejected one by
    one, counted by reason, and never reach the merge, the fit or the Plan."""
    from tests.builders import garbage_snapshots

    ctl = Controller(load_config())
    ctl.step(1.0, _snaps(1.0))
    theta = ctl.cascade.to_dict()
    garbage = garbage_snapshots("llm-h100", 2.0)
    plan = ctl.step(2.0, [*garbage, *_snaps(2.0, seed=1)])  # good ones in the same batch
    assert ctl.rejected_snapshots == len(garbage)
    assert sum(ctl.monitor.rejected_reasons.values()) == len(garbage)
    assert ctl.monitor.rejected_reasons["not a snapshot"] == 2
    assert ctl.view is not None and len(ctl.view.pools["llm-h100"].replicas) == 4
    assert not any(r.startswith("g-") for r in ctl.monitor.latest)
    for weights in plan.routing.values():
        assert all(math.isfinite(w) and w >= 0 for w in weights.values())
        assert math.isclose(sum(weights.values()), 1.0, abs_tol=1e-6)
    assert ctl.cascade.to_dict() != theta  # the good half of the batch was still fitted
    c = ctl.cascade.coefficients
    assert all(map(math.isfinite, (c.log_scale, c.a_prefill, c.b_kv, c.c_heterogeneity)))
