"""Cascade's Prometheus metrics: one table of definitions and small exporters.

``METRICS`` is the single source of truth for every metric Cascade exports: name
(``cascade_`` prefix, unit in the name: ``_seconds``, ``_ratio``,
``_tokens_per_second``; counters end in ``_total``), type, description and the
label keys. The Grafana dashboard (``orchestrator.dashboard``) and the docs are
written against this table.

Exporters consume plain values and contracts (``ClusterView``, ``Plan``,
``ReplicaSnapshot``) and write them through a ``MetricsBackend``:

* ``ControllerMetrics`` (controller actor, ``ray.util.metrics``): pool and cluster
  levels of the latency hierarchy, cascade-model coefficients, backpressure,
  Plan (routing weights, replica targets, status), optimizer solve time.
* ``ReplicaMetrics`` (pool deployments, ``ray.serve.metrics``): the replica level
  of the hierarchy and the replica's load. Serve adds ``deployment``, ``replica``
  and ``application`` labels itself (and reserves those keys).
* ``IngressMetrics`` (ingress deployment, ``ray.serve.metrics``): observed
  request latency, predicted P99 and its exceedances, SLO violations, admission.
* ``RouterMetrics`` (wherever the request router runs): decision latency.

Names as Prometheus stores them: Ray's metrics agent prefixes every application
metric with ``ray_`` (``cascade_plan_version`` is scraped as
``ray_cascade_plan_version``); a histogram adds ``_bucket``/``_sum``/``_count``.
``MetricDef.prometheus_name`` gives that name; the dashboard uses it.

Cardinality is bounded by construction: no label takes a per-request value
(request ids, prompts, free-form reasons). Labels with a closed vocabulary
(``level``, ``metric``, ``quantile``, ``coefficient``, ``status``, ``outcome``)
are checked against it; open labels (``pool``, ``class``, ``policy``, ``replica``)
come from the config or the code, and each exporter keeps at most
``max_series`` label sets per metric (further ones are dropped and counted in
``dropped_series``, never raised: an exporter must not break serving).

Failure modes: a label key that is not in the table, or a value outside a closed
vocabulary, raises ``ValueError`` (a programming error, caught by the tests).
NaN and infinite values are skipped (a level with no samples exports nothing).
``RayBackend`` imports Ray lazily, on the first metric it creates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from orchestrator.contracts import ClusterView, LevelStats, Plan, SolveStatus
from replicas.telemetry import E2E, TTFT, ReplicaSnapshot
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


def quantile_label(q: float) -> str:
    """``0.99 -> "0.99"``: the ``quantile`` label value."""
    return f"{q:g}"


# Closed vocabularies. Labels not listed here are open (bounded by the series cap).
CLOSED_LABELS: Mapping[str, frozenset[str]] = {
    "level": frozenset(LEVELS),
    "metric": frozenset(SNAPSHOT_METRICS),
    "quantile": frozenset(quantile_label(q) for q in QUANTILES),
    "coefficient": frozenset(COEFFICIENTS),
    "status": frozenset(s.value for s in SolveStatus),
    "outcome": frozenset(OUTCOMES),
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
        "P99 latency predicted for a request when it was routed (metric: ttft or e2e).",
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


# ---- backends ------------------------------------------------------------------------------
class Instrument(Protocol):
    """One created metric; ``record`` sets a gauge, adds to a counter, or observes
    into a histogram."""

    def record(self, value: float, labels: Mapping[str, str]) -> None: ...


class MetricsBackend(Protocol):
    def create(self, defn: MetricDef) -> Instrument: ...


class _RayInstrument:
    def __init__(self, defn: MetricDef, impl: Any) -> None:
        self._kind = defn.kind
        self._impl = impl

    def record(self, value: float, labels: Mapping[str, str]) -> None:
        tags = dict(labels)
        if self._kind is Kind.GAUGE:
            self._impl.set(value, tags=tags)
        elif self._kind is Kind.COUNTER:
            if value > 0:  # Ray refuses non-positive increments
                self._impl.inc(value, tags=tags)
        else:
            self._impl.observe(value, tags=tags)


class RayBackend:
    """Ray's metrics: ``ray.util.metrics`` (actors, drivers) or, with ``serve=True``,
    ``ray.serve.metrics`` (inside Serve replicas: adds deployment/replica/application
    labels). Ray is imported on the first ``create``, not at construction."""

    def __init__(self, *, serve: bool = False) -> None:
        self.serve = serve

    def create(self, defn: MetricDef) -> Instrument:
        import importlib

        mod = importlib.import_module("ray.serve.metrics" if self.serve else "ray.util.metrics")
        tag_keys = defn.labels or None
        if defn.kind is Kind.GAUGE:
            impl = mod.Gauge(defn.name, description=defn.description, tag_keys=tag_keys)
        elif defn.kind is Kind.COUNTER:
            impl = mod.Counter(defn.name, description=defn.description, tag_keys=tag_keys)
        else:
            impl = mod.Histogram(
                defn.name,
                description=defn.description,
                boundaries=list(defn.boundaries),
                tag_keys=tag_keys,
            )
        return _RayInstrument(defn, impl)


class _Recorded:
    def __init__(self, store: RecordingBackend, defn: MetricDef) -> None:
        self._store = store
        self._defn = defn

    def record(self, value: float, labels: Mapping[str, str]) -> None:
        key = (self._defn.name, tuple(sorted(labels.items())))
        kind = self._defn.kind
        if kind is Kind.GAUGE:
            self._store.gauges[key] = value
        elif kind is Kind.COUNTER:
            self._store.counters[key] = self._store.counters.get(key, 0.0) + value
        else:
            self._store.observations.setdefault(key, []).append(value)


@dataclass
class RecordingBackend:
    """In-memory backend for tests and the simulator: last gauge values, counter
    totals and histogram observations, keyed by (name, sorted label items)."""

    gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    observations: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = field(
        default_factory=dict
    )
    created: list[str] = field(default_factory=list)

    def create(self, defn: MetricDef) -> Instrument:
        self.created.append(defn.name)
        return _Recorded(self, defn)

    def value(self, name: str, **labels: str) -> float | list[float] | None:
        """The recorded gauge value / counter total / observations for one series."""
        key = (name, tuple(sorted(labels.items())))
        if key in self.gauges:
            return self.gauges[key]
        if key in self.counters:
            return self.counters[key]
        return self.observations.get(key)

    def series(self, name: str) -> list[dict[str, str]]:
        """Label sets recorded for ``name``."""
        keys = [*self.gauges, *self.counters, *self.observations]
        return [dict(labels) for (n, labels) in keys if n == name]


class _Exporter:
    """Creates its metrics lazily and enforces the label rules and the series cap."""

    def __init__(self, backend: MetricsBackend | None, max_series: int) -> None:
        if max_series < 1:
            raise ValueError(f"max_series must be >= 1, got {max_series}")
        self._backend = backend
        self._max_series = max_series
        self._instruments: dict[str, Instrument] = {}
        self._series: dict[str, set[tuple[tuple[str, str], ...]]] = {}
        self.dropped_series = 0

    def _default_backend(self) -> MetricsBackend:
        return RayBackend()

    def _emit(self, name: str, value: float, **labels: str) -> None:
        if not math.isfinite(value):
            return
        defn = BY_NAME[name]
        check_labels(defn, labels)
        seen = self._series.setdefault(name, set())
        key = tuple(sorted(labels.items()))
        if key not in seen:
            if len(seen) >= self._max_series:
                self.dropped_series += 1
                return
            seen.add(key)
        inst = self._instruments.get(name)
        if inst is None:
            if self._backend is None:
                self._backend = self._default_backend()
            inst = self._instruments[name] = self._backend.create(defn)
        inst.record(float(value), labels)


def _export_level(exp: _Exporter, level: str, pool: str, stats: Mapping[str, LevelStats]) -> None:
    for m, st in stats.items():
        if m not in CLOSED_LABELS["metric"] or st.n <= 0:
            continue
        exp._emit("cascade_latency_samples", float(st.n), level=level, pool=pool, metric=m)
        exp._emit("cascade_latency_sigma_seconds", st.std, level=level, pool=pool, metric=m)
        for q, v in ((0.5, st.p50), (0.9, st.p90), (0.99, st.p99)):
            exp._emit(
                "cascade_latency_quantile_seconds",
                v,
                level=level,
                pool=pool,
                metric=m,
                quantile=quantile_label(q),
            )


class ControllerMetrics(_Exporter):
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
            _export_level(self, "pool", name, pv.metrics)
            self._emit("cascade_pool_running_requests", float(pv.running), pool=name)
            self._emit("cascade_pool_waiting_requests", float(pv.waiting), pool=name)
            self._emit("cascade_pool_kv_usage_ratio", pv.kv_usage, pool=name)
            self._emit("cascade_pool_prefill_sigma_seconds", pv.prefill_sigma_s, pool=name)
            self._emit("cascade_pool_decode_sigma_seconds", pv.itl_sigma_s, pool=name)
            n = len(pv.replicas) if running is None else running.get(name, len(pv.replicas))
            self._emit("cascade_pool_running_replicas", float(n), pool=name)
        _export_level(self, "cluster", "", view.cluster)
        c = view.cascade
        for coef in COEFFICIENTS:
            self._emit("cascade_model_coefficient", float(getattr(c, coef)), coefficient=coef)
        self._emit("cascade_model_samples", float(c.n_eff))
        self._emit("cascade_stale_replicas", float(len(view.stale_replicas)))
        self.export_plan(plan, solve_ms=solve_ms)

    def export_plan(self, plan: Plan, *, solve_ms: float | None = None) -> None:
        for cls, weights in plan.routing.items():
            for pool, w in weights.items():
                self._emit("cascade_routing_weight_ratio", w, **{"class": cls, "pool": pool})
        for pool, pp in plan.pools.items():
            self._emit("cascade_backpressure_saturation_ratio", pp.saturation, pool=pool)
            self._emit(
                "cascade_admission_budget_tokens_per_second",
                float(pp.admission_token_budget),
                pool=pool,
            )
            self._emit("cascade_pool_target_replicas", float(pp.target_replicas), pool=pool)
        for status in SolveStatus:
            self._emit("cascade_plan_status", float(plan.status is status), status=status.value)
        self._emit("cascade_plan_version", float(plan.version))
        self._emit("cascade_controller_steps_total", 1.0)
        if solve_ms is not None:
            self._emit(
                "cascade_optimizer_solve_seconds", solve_ms / 1000.0, status=plan.status.value
            )


class ReplicaMetrics(_Exporter):
    """Exports one replica's own view, per snapshot (``ray.serve.metrics``; Serve
    adds the ``replica`` and ``deployment`` labels). The replica level of the
    latency hierarchy comes from the snapshot's mergeable summaries."""

    def __init__(self, backend: MetricsBackend | None = None, *, max_series: int = 500) -> None:
        super().__init__(backend, max_series)

    def _default_backend(self) -> MetricsBackend:
        return RayBackend(serve=True)

    def export(self, snap: ReplicaSnapshot) -> None:
        stats: dict[str, LevelStats] = {}
        for m, s in snap.summaries.items():
            if s.n <= 0:
                continue
            p50, p90, p99 = (float(v) for v in s.quantiles(QUANTILES))
            stats[m] = LevelStats(s.n, s.mean, s.std, p50, p90, p99)
        _export_level(self, "replica", snap.pool, stats)
        self._emit("cascade_replica_running_requests", float(snap.running), pool=snap.pool)
        self._emit("cascade_replica_waiting_requests", float(snap.waiting), pool=snap.pool)
        self._emit("cascade_replica_kv_usage_ratio", snap.kv_usage, pool=snap.pool)


@dataclass(frozen=True, slots=True)
class SloThresholds:
    """One class's objectives (seconds), for counting violations at the ingress.

    Without ``e2e_s`` the E2E objective follows the request's length,
    ``ttft_s + tpot_s · (output_tokens − 1)`` (needs ``tpot_s`` and the count).
    """

    ttft_s: float
    e2e_s: float | None = None
    tpot_s: float | None = None

    def e2e_limit(self, output_tokens: int | None) -> float | None:
        if self.e2e_s is not None:
            return self.e2e_s
        if self.tpot_s is None or output_tokens is None or output_tokens < 1:
            return None
        return self.ttft_s + self.tpot_s * (output_tokens - 1)


class IngressMetrics(_Exporter):
    """Per-request outcomes at the ingress (``ray.serve.metrics``).

    ``slos`` maps class -> thresholds; a class not in it counts no violations.
    """

    def __init__(
        self,
        backend: MetricsBackend | None = None,
        *,
        slos: Mapping[str, SloThresholds] | None = None,
        max_series: int = 2000,
    ) -> None:
        super().__init__(backend, max_series)
        self.slos = dict(slos or {})

    def _default_backend(self) -> MetricsBackend:
        return RayBackend(serve=True)

    @classmethod
    def from_config(cls, config: Any, backend: MetricsBackend | None = None) -> IngressMetrics:
        """Thresholds from a ``CascadeConfig``'s SLO classes."""
        slos = {
            c.name: SloThresholds(c.ttft_s, getattr(c, "e2e_s", None), getattr(c, "tpot_s", None))
            for c in config.slos.classes
        }
        return cls(backend, slos=slos)

    def observe_admission(self, slo_class: str, outcome: str) -> None:
        """``outcome``: admitted, rejected or deferred (held and retried)."""
        labels = {"class": slo_class, "outcome": outcome}
        self._emit("cascade_admission_decisions_total", 1.0, **labels)

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
        ``output_tokens`` sets a length-dependent E2E objective (see ``SloThresholds``)."""
        slo = self.slos.get(slo_class)
        for m, observed, predicted, limit in (
            (TTFT, ttft_s, predicted_ttft_p99_s, slo.ttft_s if slo else None),
            (E2E, e2e_s, predicted_e2e_p99_s, slo.e2e_limit(output_tokens) if slo else None),
        ):
            labels = {"pool": pool, "class": slo_class, "metric": m}
            if predicted is not None and math.isfinite(predicted):
                self._emit("cascade_predicted_p99_seconds", predicted, **labels)
            if observed is None or not math.isfinite(observed):
                continue
            self._emit("cascade_request_latency_seconds", observed, **labels)
            if predicted is not None and observed > predicted:
                self._emit("cascade_prediction_exceedances_total", 1.0, **labels)
            if limit is not None and observed > limit:
                self._emit("cascade_slo_violations_total", 1.0, **labels)


class RouterMetrics(_Exporter):
    """Router decision latency (``ray.serve.metrics`` inside a Serve process)."""

    def __init__(self, backend: MetricsBackend | None = None, *, max_series: int = 200) -> None:
        super().__init__(backend, max_series)

    def _default_backend(self) -> MetricsBackend:
        return RayBackend(serve=True)

    def observe_decision(self, seconds: float, policy: str, pool: str) -> None:
        self._emit("cascade_router_decision_seconds", seconds, pool=pool, policy=policy)


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
    "SloThresholds",
    "check_labels",
    "metric",
    "quantile_label",
    "validate_table",
]
