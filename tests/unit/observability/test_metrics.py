"""The metric table and the exporters (through the in-memory backend; no Ray)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from orchestrator.config import load_config
from orchestrator.contracts import SolveStatus
from orchestrator.metrics import (
    BY_NAME,
    CLOSED_LABELS,
    METRICS,
    ControllerMetrics,
    IngressMetrics,
    Kind,
    MetricDef,
    RecordingBackend,
    ReplicaMetrics,
    RouterMetrics,
    check_labels,
    metric,
    validate_table,
)
from policies.slo import SloClass, SloConfig
from tests.unit.observability.fakes import POOLS, snapshot, view_and_plan


def test_the_table_follows_the_naming_and_label_rules() -> None:
    assert validate_table(METRICS) == []
    for m in METRICS:
        assert m.name.startswith("cascade_")
        assert m.prometheus_name == "ray_" + m.name
    # the hierarchy is one family per quantity with a level label
    assert metric("cascade_latency_sigma_seconds").labels == ("level", "pool", "metric")
    assert CLOSED_LABELS["level"] == {"replica", "pool", "cluster"}


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (MetricDef("cascade_x", Kind.COUNTER, "d"), "must end in _total"),
        (MetricDef("cascade_x_total", Kind.GAUGE, "d"), "only counters end in _total"),
        (MetricDef("vllm_x", Kind.GAUGE, "d"), "name must match"),
        (MetricDef("cascade_x", Kind.GAUGE, "d", ("request_id",)), "unbounded"),
        (MetricDef("cascade_x", Kind.GAUGE, "d", ("replica",)), "reserved) by Ray Serve"),
        (MetricDef("cascade_x_seconds", Kind.HISTOGRAM, "d", (), (1.0, 0.5)), "increasing"),
        (MetricDef("cascade_x", Kind.HISTOGRAM, "d", (), (0.1,)), "end in _seconds"),
        (MetricDef("cascade_x_seconds", Kind.HISTOGRAM, "d", ("le",), (0.1,)), "clashes"),
        (MetricDef("cascade_x", Kind.GAUGE, ""), "missing description"),
    ],
)
def test_validate_table_names_each_broken_definition(bad: MetricDef, problem: str) -> None:
    problems = validate_table([bad])
    assert any(problem in p for p in problems), problems


def test_check_labels_refuses_wrong_keys_and_values_outside_a_vocabulary() -> None:
    d = metric("cascade_latency_sigma_seconds")
    check_labels(d, {"level": "pool", "pool": "p", "metric": "itl"})
    with pytest.raises(ValueError, match="missing"):
        check_labels(d, {"level": "pool", "pool": "p"})
    with pytest.raises(ValueError, match="extra"):
        check_labels(d, {"level": "pool", "pool": "p", "metric": "itl", "request_id": "r1"})
    with pytest.raises(ValueError, match="not in"):
        check_labels(d, {"level": "node", "pool": "p", "metric": "itl"})
    with pytest.raises(ValueError, match="longer than"):
        check_labels(d, {"level": "pool", "pool": "p" * 200, "metric": "itl"})


def _value(b: RecordingBackend, name: str, **labels: str) -> float:
    v = b.value(name, **labels)
    assert isinstance(v, float), (name, labels, v)
    return v


def test_controller_export_covers_levels_cascade_backpressure_and_plan() -> None:
    view, plan, _ = view_and_plan()
    b = RecordingBackend()
    ControllerMetrics(b).export(view, plan, solve_ms=12.5)
    for pool in POOLS:
        for q in ("0.5", "0.9", "0.99"):
            labels = {"level": "pool", "pool": pool, "metric": "itl", "quantile": q}
            got = _value(b, "cascade_latency_quantile_seconds", **labels)
            assert math.isclose(got, getattr(view.pools[pool].metrics["itl"], f"p{q[2:]:0<2}"))
        sigma = _value(b, "cascade_latency_sigma_seconds", level="pool", pool=pool, metric="itl")
        assert math.isclose(sigma, view.pools[pool].metrics["itl"].std)
        target = plan.pools[pool].target_replicas
        assert _value(b, "cascade_pool_target_replicas", pool=pool) == target
        running = len(view.pools[pool].replicas)
        assert _value(b, "cascade_pool_running_replicas", pool=pool) == running
        assert _value(b, "cascade_pool_decode_sigma_seconds", pool=pool) > 0
        assert _value(b, "cascade_backpressure_saturation_ratio", pool=pool) >= 0
    # the cluster level has no pool label value
    assert _value(b, "cascade_latency_sigma_seconds", level="cluster", pool="", metric="e2e") > 0
    # routing weights of a class sum to one over pools
    for cls, weights in plan.routing.items():
        total = sum(
            _value(b, "cascade_routing_weight_ratio", **{"class": cls, "pool": p}) for p in weights
        )
        assert math.isclose(total, 1.0, abs_tol=1e-9)
    # plan status is one-hot
    status = {s.value: _value(b, "cascade_plan_status", status=s.value) for s in SolveStatus}
    assert sorted(status.values()) == [0.0] * (len(SolveStatus) - 1) + [1.0]
    assert status[plan.status.value] == 1.0
    assert b.value("cascade_optimizer_solve_seconds", status=plan.status.value) == [0.0125]
    assert _value(b, "cascade_model_coefficient", coefficient="a_prefill") == view.cascade.a_prefill


def test_steps_without_a_solve_refresh_gauges_but_observe_no_solve_time() -> None:
    view, plan, _ = view_and_plan()
    b = RecordingBackend()
    exp = ControllerMetrics(b)
    for _ in range(3):
        exp.export(view, plan)
    assert b.value("cascade_optimizer_solve_seconds", status=plan.status.value) is None
    assert b.value("cascade_controller_steps_total") == 3.0


def test_nan_statistics_are_skipped_not_exported() -> None:
    view, plan, _ = view_and_plan()
    pool = view.pools[POOLS[0]]
    empty = replace(pool, prefill_sigma_s=math.nan)
    view = replace(view, pools={**view.pools, POOLS[0]: empty})
    b = RecordingBackend()
    ControllerMetrics(b).export(view, plan)
    assert b.value("cascade_pool_prefill_sigma_seconds", pool=POOLS[0]) is None
    assert b.value("cascade_pool_prefill_sigma_seconds", pool=POOLS[1]) is not None


def test_series_cap_drops_new_label_sets_instead_of_growing() -> None:
    b = RecordingBackend()
    router = RouterMetrics(b, max_series=3)
    for i in range(10):  # a bug that put a per-request value in "pool"
        router.observe_decision(1e-4, "cascade", f"pool-{i}")
    assert len(b.series("cascade_router_decision_seconds")) == 3
    assert router.dropped_series == 7


def test_replica_export_is_the_replica_level_with_ordered_quantiles() -> None:
    b = RecordingBackend()
    snap = snapshot("r0", "llm-h100", 1.0, 0.01)
    ReplicaMetrics(b).export(snap)
    for m in ("ttft", "itl", "e2e"):
        qs = [
            _value(
                b, "cascade_latency_quantile_seconds", level="replica", pool="llm-h100", metric=m,
                quantile=q,
            )
            for q in ("0.5", "0.9", "0.99")
        ]  # fmt: skip
        assert qs == sorted(qs) and qs[0] > 0
    assert math.isclose(_value(b, "cascade_replica_kv_usage_ratio", pool="llm-h100"), 0.4)
    assert all(s["level"] == "replica" for s in b.series("cascade_latency_sigma_seconds"))


def test_exceedance_ratio_of_calibrated_predictions_is_about_one_percent() -> None:
    """The dashboard's coverage panel divides exceedances by predictions; with the
    true P99 as the prediction that ratio is ~1%, with half of it far more."""
    rng = np.random.default_rng(7)
    e2e = rng.lognormal(np.log(2.0), 0.5, 20_000)
    p99 = float(np.exp(np.log(2.0) + 0.5 * 2.3263478740408408))
    for predicted, lo, hi in ((p99, 0.007, 0.013), (p99 / 2, 0.15, 0.35)):
        b = RecordingBackend()
        ing = IngressMetrics(b, slos={"default": SloClass(ttft_s=1.0, e2e_s=5.0)})
        for x in e2e:
            ing.observe_request(
                "llm-h100", "default", e2e_s=float(x), predicted_e2e_p99_s=predicted
            )
        labels = {"pool": "llm-h100", "class": "default", "metric": "e2e"}
        exceed = b.value("cascade_prediction_exceedances_total", **labels)
        predictions = b.value("cascade_predicted_p99_seconds", **labels)
        assert isinstance(exceed, float) and isinstance(predictions, list)
        assert lo < exceed / len(predictions) < hi
        violations = b.value("cascade_slo_violations_total", **labels)
        assert violations == float(np.sum(e2e > 5.0))


def test_admission_outcomes_are_a_closed_vocabulary() -> None:
    b = RecordingBackend()
    ing = IngressMetrics(b)
    ing.observe_admission("default", "admitted")
    ing.observe_admission("default", "rejected")
    with pytest.raises(ValueError, match="outcome"):
        ing.observe_admission("default", "P(meet SLO) = 0.031")  # a free-form reason
    rejected = {"class": "default", "outcome": "rejected"}
    assert b.value("cascade_admission_decisions_total", **rejected) == 1.0


def test_ray_is_imported_only_when_a_metric_is_first_written() -> None:
    exp = ControllerMetrics()  # no backend: Ray's, created lazily
    view, plan, _ = view_and_plan()
    with pytest.raises(ImportError, match="pure core only"):  # the unit conftest blocks ray
        exp.export(view, plan)


def test_every_name_in_by_name_is_in_the_table() -> None:
    assert set(BY_NAME) == {m.name for m in METRICS}
    with pytest.raises(KeyError, match="unknown metric"):
        metric("cascade_nope")


def test_e2e_objective_follows_the_length_when_the_class_sets_none() -> None:
    b = RecordingBackend()
    slo = SloClass(name="chat", ttft_s=1.0, tpot_s=0.05)  # E2E target = 1 + 0.05 (n - 1)
    ing = IngressMetrics(b, slos={"chat": slo})
    ing.observe_request("p", "chat", e2e_s=5.0, output_tokens=101)  # target 6.0: met
    ing.observe_request("p", "chat", e2e_s=5.0, output_tokens=61)  # target 4.0: missed
    ing.observe_request("p", "chat", e2e_s=50.0)  # no length: no objective to miss
    ing.observe_request("p", "chat", e2e_s=50.0, output_tokens=0)  # nor with no tokens
    labels = {"pool": "p", "class": "chat", "metric": "e2e"}
    assert b.value("cascade_slo_violations_total", **labels) == 1.0


def test_a_fixed_e2e_objective_holds_for_every_length() -> None:
    b = RecordingBackend()
    slo = SloClass(name="batch", ttft_s=5.0, tpot_s=0.5, e2e_s=30.0)
    ing = IngressMetrics(b, slos={"batch": slo})
    ing.observe_request("p", "batch", e2e_s=31.0, output_tokens=1000)  # 30 s, not 505 s
    ing.observe_request("p", "batch", e2e_s=31.0)  # no length needed
    ing.observe_request("p", "batch", e2e_s=29.0, output_tokens=2)
    labels = {"pool": "p", "class": "batch", "metric": "e2e"}
    assert b.value("cascade_slo_violations_total", **labels) == 2.0


def test_ingress_objectives_are_the_configured_classes() -> None:
    classes = (
        SloClass(name="interactive", ttft_s=0.5, tpot_s=0.05, max_prompt_tokens=4096),
        SloClass(name="batch", ttft_s=10.0, tpot_s=0.2),
    )
    config = load_config().model_copy(
        update={"slos": SloConfig(classes=classes, default_class="batch")}
    )
    b = RecordingBackend()
    ing = IngressMetrics.from_config(config, b)
    assert ing.slos == {"interactive": classes[0], "batch": classes[1]}
    ing.observe_request("p", "interactive", ttft_s=0.8)  # over 0.5: a violation
    ing.observe_request("p", "batch", ttft_s=0.8)  # under 10: none
    violations = b.value(
        "cascade_slo_violations_total", pool="p", metric="ttft", **{"class": "interactive"}
    )
    assert violations == 1.0
    assert (
        b.value("cascade_slo_violations_total", pool="p", metric="ttft", **{"class": "batch"})
        is None
    )
