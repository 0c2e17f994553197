"""Exporters: how metric values reach a backend, and the replica's own exporter.

``Exporter`` writes plain values through a ``MetricsBackend`` under the rules of
the metric table (``replicas.metric_table``): label keys and closed vocabularies
are checked, NaN and infinite values are skipped (a level with no samples exports
nothing), and each exporter keeps at most ``max_series`` label sets per metric
(further ones are dropped and counted in ``dropped_series``, never raised: an
exporter must not break serving). Instruments are created on first use.

Backends: ``RayBackend`` (``ray.util.metrics``, or ``ray.serve.metrics`` inside a
Serve replica; Ray is imported on the first metric it creates) and
``RecordingBackend`` (in memory, for tests and the simulator).

``ReplicaMetrics`` (pool deployments, ``ray.serve.metrics``) exports the replica
level of the latency hierarchy and the replica's load, per snapshot. Serve adds
``deployment``, ``replica`` and ``application`` labels itself (and reserves those
keys). The controller, ingress and router exporters are in ``orchestrator.metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from replicas.metric_table import (
    BY_NAME,
    CLOSED_LABELS,
    QUANTILES,
    Kind,
    MetricDef,
    check_labels,
    quantile_label,
)
from replicas.telemetry import ReplicaSnapshot


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


class Exporter:
    """Creates its metrics lazily and enforces the label rules and the series cap.

    ``emit(name, value, **labels)`` is the one way values leave an exporter;
    subclasses add methods that consume contracts and call it."""

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

    def emit(self, name: str, value: float, **labels: str) -> None:
        """Record ``value`` for one series of metric ``name`` (skipped when not
        finite, or when the series would exceed the cap)."""
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


def export_level(
    exp: Exporter,
    level: str,
    pool: str,
    metric: str,
    n: int,
    std: float,
    quantiles: tuple[float, float, float],
) -> None:
    """One metric of one hierarchy level: sample count, σ and the P50/P90/P99
    (``quantiles``, in ``QUANTILES`` order). Skipped for an empty level or a metric
    outside the ``metric`` vocabulary."""
    if metric not in CLOSED_LABELS["metric"] or n <= 0:
        return
    exp.emit("cascade_latency_samples", float(n), level=level, pool=pool, metric=metric)
    exp.emit("cascade_latency_sigma_seconds", std, level=level, pool=pool, metric=metric)
    for q, v in zip(QUANTILES, quantiles, strict=True):
        exp.emit(
            "cascade_latency_quantile_seconds",
            v,
            level=level,
            pool=pool,
            metric=metric,
            quantile=quantile_label(q),
        )


class ReplicaMetrics(Exporter):
    """Exports one replica's own view, per snapshot (``ray.serve.metrics``; Serve
    adds the ``replica`` and ``deployment`` labels). The replica level of the
    latency hierarchy comes from the snapshot's mergeable summaries."""

    def __init__(self, backend: MetricsBackend | None = None, *, max_series: int = 500) -> None:
        super().__init__(backend, max_series)

    def _default_backend(self) -> MetricsBackend:
        return RayBackend(serve=True)

    def export(self, snap: ReplicaSnapshot) -> None:
        for m, s in snap.summaries.items():
            if s.n <= 0:
                continue
            p50, p90, p99 = (float(v) for v in s.quantiles(QUANTILES))
            export_level(self, "replica", snap.pool, m, s.n, s.std, (p50, p90, p99))
        self.emit("cascade_replica_running_requests", float(snap.running), pool=snap.pool)
        self.emit("cascade_replica_waiting_requests", float(snap.waiting), pool=snap.pool)
        self.emit("cascade_replica_kv_usage_ratio", snap.kv_usage, pool=snap.pool)


__all__ = [
    "Exporter",
    "Instrument",
    "MetricsBackend",
    "RayBackend",
    "RecordingBackend",
    "ReplicaMetrics",
    "export_level",
]
