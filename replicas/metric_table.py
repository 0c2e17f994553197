"""The table of every metric Cascade exports, and its rules.

``METRICS`` is the single source of truth: name (``cascade_`` prefix, unit in the
name: ``_seconds``, ``_ratio``, ``_tokens_per_second``; counters end in
``_total``), type, description and the label keys. The exporters (replica side:
``replicas.metrics_export``; controller, ingress and router:
``orchestrator.metrics``), the Grafana dashboard and the docs are written against
it. It sits at the bottom of the stack (with the replicas' telemetry contracts)
so that every layer that exports may read it.

Names as Prometheus stores them: Ray's metrics agent prefixes every application
metric with ``ray_`` (``cascade_plan_version`` is scraped as
``ray_cascade_plan_version``); a histogram adds ``_bucket``/``_sum``/``_count``.
``MetricDef.prometheus_name`` gives that name; the dashboard uses it.

Cardinality is bounded by construction: no label takes a per-request value
(request ids, prompts, free-form reasons). Labels with a closed vocabulary
(``level``, ``metric``, ``quantile``, ``coefficient``, ``status``, ``outcome``)
are checked against it (``check_labels``); open labels (``pool``, ``class``,
``policy``, ``replica``) come from the config or the code and are bounded by the
exporters' series cap.

Failure modes: a label key that is not in the table, or a value outside a closed
vocabulary, raises ``ValueError`` (a programming error, caught by the tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from replicas.telemetry import E2E, TTFT
from replicas.telemetry import METRICS as SNAPSHOT_METRICS

RAY_PREFIX = "ray_"  # Ray's metrics agent exports application metrics as ray_<name>


class Kind(StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


# Histogram boundaries (seconds). Ray needs explicit, positive boundaries.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0,
)  # fmt: skip
DECISION_BUCKETS_S: tuple[float, ...] = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
)  # fmt: skip
SOLVE_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
LEVELS: tuple[str, ...] = ("replica", "pool", "cluster")
COEFFICIENTS: tuple[str, ...] = (
    "log_scale",
    "a_prefill",
    "b_kv",
    "c_heterogeneity",
    "residual_std",
)
REQUEST_METRICS: tuple[str, ...] = (TTFT, E2E)  # what the ingress observes per request
OUTCOMES: tuple[str, ...] = ("admitted", "rejected", "deferred")
# The controller's mutating calls that need the caller secret (orchestrator.access)
GUARDED_METHODS: tuple[str, ...] = ("push", "report_arrivals", "pin")


# The values of the Plan's solve status (``optim.SolveStatus``), the ``status``
# label's vocabulary. Spelled out here because the table sits below optim/ and the
# orchestrator; a unit test keeps the two equal.
PLAN_STATUSES: tuple[str, ...] = (
    "optimal",
    "optimal_inaccurate",
    "infeasible",
    "solver_error",
    "static",
)


def quantile_label(q: float) -> str:
    """``0.99 -> "0.99"``: the ``quantile`` label value."""
    return f"{q:g}"


# Closed vocabularies. Labels not listed here are open (bounded by the series cap).
CLOSED_LABELS: Mapping[str, frozenset[str]] = {
    "level": frozenset(LEVELS),
    "metric": frozenset(SNAPSHOT_METRICS) | {"tpot"},  # tpot: the gateway's predictions
    "quantile": frozenset(quantile_label(q) for q in QUANTILES),
    "coefficient": frozenset(COEFFICIENTS),
    "status": frozenset(PLAN_STATUSES),
    "outcome": frozenset(OUTCOMES),
    "method": frozenset(GUARDED_METHODS),
}
# Label keys Ray Serve adds to ray.serve.metrics by itself (and refuses from us).
SERVE_LABELS: tuple[str, ...] = ("deployment", "replica", "application")
# Keys that would make cardinality grow with traffic: never allowed in the table.
FORBIDDEN_LABELS: frozenset[str] = frozenset(
    {"request", "request_id", "prompt", "user", "trace_id", "reason", "session"}
)
MAX_LABEL_VALUE_CHARS = 128


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric: Cascade's name (without Ray's ``ray_`` prefix), type, help text,
    label keys, and histogram boundaries (seconds) for histograms."""

    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()

    @property
    def prometheus_name(self) -> str:
        """The series name in Prometheus (gauge/counter) or the histogram's base name."""
        return RAY_PREFIX + self.name

    def series(self, suffix: str = "") -> str:
        """``series("bucket") -> "ray_<name>_bucket"`` (histograms)."""
        return self.prometheus_name + (f"_{suffix}" if suffix else "")


def _g(name: str, description: str, *labels: str) -> MetricDef:
    return MetricDef(name, Kind.GAUGE, description, labels)


def _c(name: str, description: str, *labels: str) -> MetricDef:
    return MetricDef(name, Kind.COUNTER, description, labels)


def _h(name: str, description: str, buckets: tuple[float, ...], *labels: str) -> MetricDef:
    return MetricDef(name, Kind.HISTOGRAM, description, labels, buckets)


METRICS: tuple[MetricDef, ...] = (
    # ---- the latency hierarchy (replica -> pool -> cluster) ------------------------------
    _g(
        "cascade_latency_sigma_seconds",
        "Standard deviation of a latency metric at one hierarchy level "
        "(replica: exported by the replica; pool/cluster: exact merges in the controller; "
        "pool is empty at the cluster level).",
        "level", "pool", "metric",
    ),
    _g(
        "cascade_latency_quantile_seconds",
        "Quantile (0.5/0.9/0.99) of a latency metric at one hierarchy level, from the "
        "mergeable sketches.",
        "level", "pool", "metric", "quantile",
    ),
    _g(
        "cascade_latency_samples",
        "Number of samples behind a level's latency statistics.",
        "level", "pool", "metric",
    ),
    # ---- the cascade (prefill sigma -> decode sigma) -------------------------------------
    _g(
        "cascade_pool_prefill_sigma_seconds",
        "Recent (decayed) sigma of prefill step time, mean over a pool's replicas.",
        "pool",
    ),
    _g(
        "cascade_pool_decode_sigma_seconds",
        "Recent (decayed) sigma of decode inter-token latency, mean over a pool's replicas.",
        "pool",
    ),
    _g(
        "cascade_model_coefficient",
        "Fitted cascade-model coefficient: log sigma_d = log_scale + a_prefill log sigma_p "
        "+ b_kv log(1+kv) + c_heterogeneity log h; residual_std is the log-residual std.",
        "coefficient",
    ),
    _g("cascade_model_samples", "Decayed number of samples behind the cascade-model fit."),
    # ---- load and backpressure per pool --------------------------------------------------
    _g("cascade_pool_running_requests", "Requests running in a pool (sum over replicas).", "pool"),
    _g("cascade_pool_waiting_requests", "Requests waiting in a pool (sum over replicas).", "pool"),
    _g("cascade_pool_kv_usage_ratio", "Mean fraction of KV-cache blocks in use in a pool.", "pool"),
    _g(
        "cascade_backpressure_saturation_ratio",
        "Backpressure saturation of a pool; >= 1 means new prefills are held or shed.",
        "pool",
    ),
    _g(
        "cascade_admission_budget_tokens_per_second",
        "Prefill tokens per second the backpressure admits to new requests in a pool.",
        "pool",
    ),
    _c(
        "cascade_admission_decisions_total",
        "Admission decisions at the ingress by SLO class and outcome "
        "(admitted, rejected, deferred = held and retried).",
        "class", "outcome",
    ),
    # ---- allocation and routing ------------------------------------------------------------
    _g(
        "cascade_routing_weight_ratio",
        "Plan routing weight: fraction of a class's requests sent to a pool.",
        "class", "pool",
    ),
    _g("cascade_pool_target_replicas", "Replicas the Plan asks for in a pool.", "pool"),
    _g(
        "cascade_pool_running_replicas",
        "Replicas of a pool that report fresh snapshots to the controller.",
        "pool",
    ),
    _h(
        "cascade_router_decision_seconds",
        "Time the request router takes to choose a replica.",
        DECISION_BUCKETS_S,
        "pool", "policy",
    ),
    # ---- SLOs, tails and prediction quality (ingress) -------------------------------------
    _h(
        "cascade_request_latency_seconds",
        "Observed request latency at the ingress (metric: ttft or e2e).",
        LATENCY_BUCKETS_S,
        "pool", "class", "metric",
    ),
    _h(
        "cascade_predicted_p99_seconds",
        "P99 latency the gateway predicted for a request on the replica it ranked first, "
        "conformally corrected (metric: ttft or e2e).",
        LATENCY_BUCKETS_S,
        "pool", "class", "metric",
    ),
    _c(
        "cascade_prediction_exceedances_total",
        "Requests whose observed latency exceeded their predicted P99 (about 1% when "
        "the predictions are calibrated).",
        "pool", "class", "metric",
    ),
    _c(
        "cascade_predictions_total",
        "Gateway predictions matched with their request's outcome (metric: ttft, tpot, e2e).",
        "pool", "class", "metric",
    ),
    _c(
        "cascade_prediction_misses_total",
        "Outcomes above the gateway's issued prediction at a quantile; divided by "
        "cascade_predictions_total: 0.5 / 0.1 / 0.01 at P50 / P90 / P99 when calibrated.",
        "pool", "class", "metric", "quantile",
    ),
    _g(
        "cascade_prediction_miss_ratio",
        "Running share of outcomes above the issued prediction at a quantile, per "
        "conformal stream at this ingress (target 1 - quantile).",
        "pool", "class", "metric", "quantile",
    ),
    _c(
        "cascade_slo_violations_total",
        "Requests that missed their class's SLO for a metric (ttft or e2e).",
        "pool", "class", "metric",
    ),
    # ---- controller health ---------------------------------------------------------------
    _h(
        "cascade_optimizer_solve_seconds",
        "Wall time of one routing-optimizer solve, by the status it produced.",
        SOLVE_BUCKETS_S,
        "status",
    ),
    _g(
        "cascade_plan_status",
        "1 for the status of the current Plan (optimal, fallback, static), 0 for the others.",
        "status",
    ),
    _g("cascade_plan_version", "Version of the latest Plan (one more per controller step)."),
    _c("cascade_controller_steps_total", "Controller steps exported."),
    _c(
        "cascade_controller_refused_calls_total",
        "Mutating controller calls (push, report_arrivals, pin) refused for a missing or "
        "wrong caller secret: something other than Cascade's own actors is calling.",
        "method",
    ),
    _g("cascade_stale_replicas", "Replicas whose latest snapshot is older than the bound."),
    # ---- replica load (pool deployments) -------------------------------------------------
    _g("cascade_replica_running_requests", "Requests running on a replica.", "pool"),
    _g("cascade_replica_waiting_requests", "Requests waiting on a replica.", "pool"),
    _g("cascade_replica_kv_usage_ratio", "Fraction of a replica's KV-cache blocks in use.", "pool"),
)  # fmt: skip

BY_NAME: Mapping[str, MetricDef] = {m.name: m for m in METRICS}


def metric(name: str) -> MetricDef:
    """The definition named ``name``; ``KeyError`` lists the known names."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(BY_NAME)}") from None


def validate_table(table: Iterable[MetricDef] = METRICS) -> list[str]:
    """Problems with a metric table (empty list = fine): naming conventions, label
    keys, histogram boundaries. ``METRICS`` must pass; the tests assert it."""
    import re

    problems: list[str] = []
    seen: set[str] = set()
    name_re = re.compile(r"^cascade_[a-z]([a-z0-9_]*[a-z0-9])?$")
    label_re = re.compile(r"^[a-z][a-z0-9_]*$")
    for m in table:
        where = m.name
        if m.name in seen:
            problems.append(f"{where}: defined twice")
        seen.add(m.name)
        if not name_re.match(m.name):
            problems.append(f"{where}: name must match {name_re.pattern}")
        if m.kind is Kind.COUNTER and not m.name.endswith("_total"):
            problems.append(f"{where}: a counter's name must end in _total")
        if m.kind is not Kind.COUNTER and m.name.endswith("_total"):
            problems.append(f"{where}: only counters end in _total")
        if m.kind is Kind.HISTOGRAM:
            b = m.boundaries
            if not b or any(x <= 0 for x in b) or list(b) != sorted(set(b)):
                problems.append(f"{where}: boundaries must be positive and increasing")
            if not m.name.endswith("_seconds"):
                problems.append(f"{where}: histograms here measure time: end in _seconds")
        elif m.boundaries:
            problems.append(f"{where}: only histograms have boundaries")
        for suffix in ("_bucket", "_sum", "_count"):
            if m.name.endswith(suffix):
                problems.append(f"{where}: {suffix} is reserved for histogram series")
        if len(set(m.labels)) != len(m.labels):
            problems.append(f"{where}: repeated label key")
        for key in m.labels:
            if not label_re.match(key) or key.startswith("__"):
                problems.append(f"{where}: bad label key {key!r}")
            if key in FORBIDDEN_LABELS:
                problems.append(f"{where}: label {key!r} is unbounded (per-request)")
            if key in SERVE_LABELS:
                problems.append(f"{where}: label {key!r} is added (and reserved) by Ray Serve")
            if key in ("le", "quantile") and m.kind is Kind.HISTOGRAM:
                problems.append(f"{where}: label {key!r} clashes with histogram series")
        if not m.description:
            problems.append(f"{where}: missing description")
    return problems


def check_labels(defn: MetricDef, labels: Mapping[str, str]) -> None:
    """Raise ``ValueError`` unless ``labels`` has exactly ``defn``'s keys, string
    values of bounded length, and closed-vocabulary values from their vocabulary."""
    keys = set(labels)
    if keys != set(defn.labels):
        missing = sorted(set(defn.labels) - keys)
        extra = sorted(keys - set(defn.labels))
        raise ValueError(
            f"{defn.name}: label keys {sorted(keys)}: missing {missing}, extra {extra}"
        )
    for key, value in labels.items():
        if not isinstance(value, str):
            raise ValueError(f"{defn.name}: label {key}={value!r} must be a string")
        if len(value) > MAX_LABEL_VALUE_CHARS:
            raise ValueError(f"{defn.name}: label {key} longer than {MAX_LABEL_VALUE_CHARS} chars")
        allowed = CLOSED_LABELS.get(key)
        if allowed is not None and value not in allowed:
            raise ValueError(f"{defn.name}: label {key}={value!r} not in {sorted(allowed)}")


__all__ = [
    "BY_NAME",
    "CLOSED_LABELS",
    "COEFFICIENTS",
    "DECISION_BUCKETS_S",
    "FORBIDDEN_LABELS",
    "LATENCY_BUCKETS_S",
    "LEVELS",
    "MAX_LABEL_VALUE_CHARS",
    "METRICS",
    "OUTCOMES",
    "PLAN_STATUSES",
    "QUANTILES",
    "RAY_PREFIX",
    "REQUEST_METRICS",
    "SERVE_LABELS",
    "SOLVE_BUCKETS_S",
    "Kind",
    "MetricDef",
    "check_labels",
    "metric",
    "quantile_label",
    "validate_table",
]
