"""Cascade's Prometheus exporters above the replicas: controller, ingress, router.

The metric table (names, types, labels, vocabularies) is ``replicas.metric_table``;
the exporter base, the backends and the replica's exporter are
``replicas.metrics_export``. Both are re-exported here, so
``orchestrator.metrics`` remains the one import for code above the replicas.

Exporters consume plain values and contracts (``ClusterView``, ``Plan``) and write
them through a ``MetricsBackend``:

* ``ControllerMetrics`` (controller actor, ``ray.util.metrics``): pool and cluster
  levels of the latency hierarchy, cascade-model coefficients, backpressure,
  Plan (routing weights, replica targets, status), optimizer solve time.
* ``IngressMetrics`` (ingress deployment, ``ray.serve.metrics``): observed
  request latency, predicted P99 and its exceedances, SLO violations, admission.
* ``RouterMetrics`` (wherever the request router runs): decision latency.
* ``ReplicaMetrics`` (pool deployments; defined in ``replicas.metrics_export``).

Failure modes: see ``replicas.metric_table`` (label rules) and
``replicas.metrics_export`` (NaN skipped, series cap).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from orchestrator.calibration import Outcome, PredictionRecord
from orchestrator.config import CascadeConfig
from orchestrator.contracts import ClusterView, LevelStats, Plan, SolveStatus
from policies.slo import SloClass
from replicas.metric_table import (
    BY_NAME,
    CLOSED_LABELS,
    COEFFICIENTS,
    METRICS,
    QUANTILES,
    RAY_PREFIX,
    Kind,
    MetricDef,
    check_labels,
    metric,
    quantile_label,
    validate_table,
)
from replicas.metrics_export import (
    Exporter,
    MetricsBackend,
    RayBackend,
    RecordingBackend,
    ReplicaMetrics,
    export_level,
)
from replicas.telemetry import E2E, TTFT
from uncertainty.request_quantiles import METRIC_NAMES


def _export_levels(exp: Exporter, level: str, pool: str, stats: Mapping[str, LevelStats]) -> None:
    for m, st in stats.items():
        export_level(exp, level, pool, m, st.n, st.std, (st.p50, st.p90, st.p99))


class ControllerMetrics(Exporter):
    """Exports what the controller knows, once per step (``ray.util.metrics``).

    ``export(view, plan, solve_ms=...)``: pass ``solve_ms`` only on a step that ran
    the routing optimizer (it is observed into the solve-time histogram with the
    Plan's status); other steps refresh the gauges only. ``running`` overrides the
    running-replica count per pool (default: replicas with fresh snapshots).
    """

    def __init__(self, backend: MetricsBackend | None = None, *, max_series: int = 2000) -> None:
        super().__init__(backend, max_series)

    def export(
        self,
        view: ClusterView,
        plan: Plan,
        *,
        solve_ms: float | None = None,
        running: Mapping[str, int] | None = None,
    ) -> None:
        for name, pv in view.pools.items():
            _export_levels(self, "pool", name, pv.metrics)
            self.emit("cascade_pool_running_requests", float(pv.running), pool=name)
            self.emit("cascade_pool_waiting_requests", float(pv.waiting), pool=name)
            self.emit("cascade_pool_kv_usage_ratio", pv.kv_usage, pool=name)
            self.emit("cascade_pool_prefill_sigma_seconds", pv.prefill_sigma_s, pool=name)
            self.emit("cascade_pool_decode_sigma_seconds", pv.itl_sigma_s, pool=name)
            n = len(pv.replicas) if running is None else running.get(name, len(pv.replicas))
            self.emit("cascade_pool_running_replicas", float(n), pool=name)
        _export_levels(self, "cluster", "", view.cluster)
        c = view.cascade
        for coef in COEFFICIENTS:
            self.emit("cascade_model_coefficient", float(getattr(c, coef)), coefficient=coef)
        self.emit("cascade_model_samples", float(c.n_eff))
        self.emit("cascade_stale_replicas", float(len(view.stale_replicas)))
        self.export_plan(plan, solve_ms=solve_ms)

    def export_plan(self, plan: Plan, *, solve_ms: float | None = None) -> None:
        for cls, weights in plan.routing.items():
            for pool, w in weights.items():
                self.emit("cascade_routing_weight_ratio", w, **{"class": cls, "pool": pool})
        for pool, pp in plan.pools.items():
            self.emit("cascade_backpressure_saturation_ratio", pp.saturation, pool=pool)
            self.emit(
                "cascade_admission_budget_tokens_per_second",
                float(pp.admission_token_budget),
                pool=pool,
            )
            self.emit("cascade_pool_target_replicas", float(pp.target_replicas), pool=pool)
        for status in SolveStatus:
            self.emit("cascade_plan_status", float(plan.status is status), status=status.value)
        self.emit("cascade_plan_version", float(plan.version))
        self.emit("cascade_controller_steps_total", 1.0)
        if solve_ms is not None:
            self.emit(
                "cascade_optimizer_solve_seconds", solve_ms / 1000.0, status=plan.status.value
            )


class IngressMetrics(Exporter):
    """Per-request outcomes at the ingress (``ray.serve.metrics``).

    ``slos`` maps class name -> ``SloClass`` (the one SLO type); a class not in
    it counts no violations, nor does a target the class does not set.
    """

    def __init__(
        self,
        backend: MetricsBackend | None = None,
        *,
        slos: Mapping[str, SloClass] | None = None,
        max_series: int = 2000,
    ) -> None:
        super().__init__(backend, max_series)
        self.slos = dict(slos or {})

    def _default_backend(self) -> MetricsBackend:
        return RayBackend(serve=True)

    @classmethod
    def from_config(
        cls, config: CascadeConfig, backend: MetricsBackend | None = None
    ) -> IngressMetrics:
        """Objectives from a ``CascadeConfig``'s SLO classes."""
        return cls(backend, slos=config.slos.table())

    def observe_admission(self, slo_class: str, outcome: str) -> None:
        """``outcome``: admitted, rejected or deferred (held and retried)."""
        labels = {"class": slo_class, "outcome": outcome}
        self.emit("cascade_admission_decisions_total", 1.0, **labels)

    def observe_request(
        self,
        pool: str,
        slo_class: str,
        *,
        ttft_s: float | None = None,
        e2e_s: float | None = None,
        predicted_ttft_p99_s: float | None = None,
        predicted_e2e_p99_s: float | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """A finished request: observed TTFT/E2E (seconds) and, when the router
        predicted them, the P99s it predicted. Exceedance = observed > predicted P99.
        ``output_tokens`` (>= 1) sets the E2E objective of a class without a fixed
        ``e2e_s`` (``SloClass.e2e_target_s``); without it such a class has no E2E
        objective to miss."""
        slo = self.slos.get(slo_class)
        for m, observed, predicted, limit in (
            (TTFT, ttft_s, predicted_ttft_p99_s, slo.ttft_s if slo else None),
            (E2E, e2e_s, predicted_e2e_p99_s, _e2e_limit(slo, output_tokens)),
        ):
            labels = {"pool": pool, "class": slo_class, "metric": m}
            if predicted is not None and math.isfinite(predicted):
                self.emit("cascade_predicted_p99_seconds", predicted, **labels)
            if observed is None or not math.isfinite(observed):
                continue
            self.emit("cascade_request_latency_seconds", observed, **labels)
            if predicted is not None and observed > predicted:
                self.emit("cascade_prediction_exceedances_total", 1.0, **labels)
            if limit is not None and observed > limit:
                self.emit("cascade_slo_violations_total", 1.0, **labels)


def observe_prediction(
    exp: Exporter,
    record: PredictionRecord,
    outcome: Outcome,
    miss_ratio: Callable[[str, int, float], float] | None = None,
) -> None:
    """One gateway prediction matched with its outcome: a prediction per metric,
    a miss per quantile whose issued value the outcome exceeded, and (with
    ``miss_ratio(metric, index, level)``) the running miss share."""
    for m, (metric_name, y) in enumerate(zip(METRIC_NAMES, outcome.values(), strict=True)):
        if not math.isfinite(y):
            continue  # a one-token answer has no TPOT
        labels = {"pool": record.pool, "class": record.slo_class, "metric": metric_name}
        exp.emit("cascade_predictions_total", 1.0, **labels)
        for j, level in enumerate(QUANTILES):
            issued = float(record.corrected[m, j])
            q = quantile_label(level)
            if math.isfinite(issued) and y > issued:
                exp.emit("cascade_prediction_misses_total", 1.0, quantile=q, **labels)
            if miss_ratio is not None:
                exp.emit("cascade_prediction_miss_ratio", miss_ratio(metric_name, m, level),
                         quantile=q, **labels)  # fmt: skip


def _e2e_limit(slo: SloClass | None, output_tokens: int | None) -> float | None:
    # a fixed e2e_s holds for every request; a length-dependent target needs
    # the count (an unknown or zero count sets none: nothing to guess it from)
    if slo is None or (slo.e2e_s is None and (output_tokens is None or output_tokens < 1)):
        return None
    return slo.e2e_target_s(float(output_tokens or 1))


class RouterMetrics(Exporter):
    """Router decision latency (``ray.serve.metrics`` inside a Serve process)."""

    def __init__(self, backend: MetricsBackend | None = None, *, max_series: int = 200) -> None:
        super().__init__(backend, max_series)

    def _default_backend(self) -> MetricsBackend:
        return RayBackend(serve=True)

    def observe_decision(self, seconds: float, policy: str, pool: str) -> None:
        self.emit("cascade_router_decision_seconds", seconds, pool=pool, policy=policy)


__all__ = [
    "BY_NAME",
    "CLOSED_LABELS",
    "METRICS",
    "QUANTILES",
    "RAY_PREFIX",
    "ControllerMetrics",
    "IngressMetrics",
    "Kind",
    "MetricDef",
    "MetricsBackend",
    "RayBackend",
    "RecordingBackend",
    "ReplicaMetrics",
    "RouterMetrics",
    "check_labels",
    "metric",
    "observe_prediction",
    "quantile_label",
    "validate_table",
]
