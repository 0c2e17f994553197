"""The Grafana dashboard's panels as data, and the PromQL helpers they use.

A ``Panel`` is a title, a description, its ``Query``s (PromQL, legend) and how it
is drawn; the rows (``orchestrator.dashboard_rows``) are lists of panels and
``orchestrator.dashboard`` turns them into Grafana's model. Every series name
comes from the metric table (``series``), so a renamed metric fails here, not in
Grafana.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.metrics import metric

POOL = 'pool=~"$pool"'  # the dashboard's pool variable
RATE = "[$__rate_interval]"  # Grafana's rate window


def series(name: str, suffix: str = "") -> str:
    """Prometheus series name of a Cascade metric (fails on an unknown name)."""
    return metric(name).series(suffix)


def hq(q: float, name: str, by: str, selector: str) -> str:
    """histogram_quantile of a Cascade histogram, summed over Ray's process labels."""
    sel = f"{{{selector}}}" if selector else ""
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({series(name, 'bucket')}{sel}{RATE})))"


def ratio_or_zero(num: str, den: str, by: str) -> str:
    """``num/den`` per ``by``, with a missing numerator (counter never incremented)
    counted as 0 instead of dropping the series."""
    num_q = f"sum by ({by}) (rate({num}{RATE}))"
    den_q = f"sum by ({by}) (rate({den}{RATE}))"
    return f"({num_q} or ({den_q} * 0)) / {den_q}"


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "s"
    kind: str = "timeseries"  # or "stat"
    width: int = 8
    thresholds: tuple[tuple[float, str], ...] = ()  # (value, color) lines
    min: float | None = None
