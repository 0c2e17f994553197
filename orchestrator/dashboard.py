"""Cascade's Grafana dashboard as code, its push, and the Prometheus/Ray-dashboard glue.

``build_dashboard(config)`` builds one dashboard with ``grafana-foundation-sdk``
(the Grafana 11.6 build pinned in pyproject) and returns its JSON model (a dict).
Rows: SLOs and tails; uncertainty by level; the cascade (prefill σ → decode σ);
backpressure; allocation and routing; controller health. Every query names its
metric through ``orchestrator.metrics`` (``MetricDef.prometheus_name``, i.e. with
Ray's ``ray_`` prefix), so a renamed metric fails here, not silently in Grafana.

Queries aggregate away the labels Ray adds per process (``WorkerId``,
``NodeAddress``, ``SessionName``, ...), so a restarted actor does not double a
series, and counters that may not exist yet (no SLO violation so far) are
completed with ``or ... * 0`` so a ratio still returns a value.

``dashboard_queries()`` lists every PromQL expression with the dashboard's
template variables replaced by their defaults (``VARIABLE_DEFAULTS``), ready for
Prometheus' HTTP API; ``raw=True`` returns them as stored in the JSON.

``push_dashboard(url, token)`` is idempotent: it reads the dashboard by uid and
posts (``overwrite: true``, fixed uid) only when the server's copy does not
already contain every field of ours; repeated pushes never duplicate it.

``prometheus_config()`` / ``write_prometheus_config()`` write a prometheus.yml that
scrapes every Ray node listed in Ray's service-discovery file, and
``k8s.render.ray_dashboard_env()`` gives the head-node variables that embed Grafana in the
Ray dashboard.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m

from orchestrator.config import CascadeConfig
from orchestrator.metrics import metric

DASHBOARD_UID = "cascade-overview"
DASHBOARD_TITLE = "Cascade: uncertainty-aware LLM serving"
DASHBOARD_TAGS = ("cascade", "ray", "llm")
# Ray writes this file on the head node and keeps it current as nodes join/leave
# (ray.dashboard.modules.metrics: <temp dir>/prom_metrics_service_discovery.json).
RAY_SD_FILE = "/tmp/ray/prom_metrics_service_discovery.json"

# Defaults substituted by dashboard_queries(): what Grafana sends on first load.
VARIABLE_DEFAULTS: Mapping[str, str] = {
    "pool": ".*",
    "metric": "itl",
    "__rate_interval": "1m",
}
LATENCY_METRICS = ("ttft", "itl", "e2e", "queue_wait", "step", "prefill_step")

_DS = dash_m.DataSourceRef(type_val="prometheus", uid="${datasource}")
_POOL = 'pool=~"$pool"'
_RI = "[$__rate_interval]"


def _n(name: str, suffix: str = "") -> str:
    """Prometheus series name of a Cascade metric (fails on an unknown name)."""
    return metric(name).series(suffix)


# ---- queries --------------------------------------------------------------------------------
def _hq(q: float, name: str, by: str, selector: str) -> str:
    """histogram_quantile of a Cascade histogram, summed over Ray's process labels."""
    sel = f"{{{selector}}}" if selector else ""
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({_n(name, 'bucket')}{sel}{_RI})))"


def _ratio_or_zero(num: str, den: str, by: str) -> str:
    """``num/den`` per ``by``, with a missing numerator (counter never incremented)
    counted as 0 instead of dropping the series."""
    num_q = f"sum by ({by}) (rate({num}{_RI}))"
    den_q = f"sum by ({by}) (rate({den}{_RI}))"
    return f"({num_q} or ({den_q} * 0)) / {den_q}"


@dataclass(frozen=True, slots=True)
class _Q:
    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class _Panel:
    title: str
    description: str
    queries: tuple[_Q, ...]
    unit: str = "s"
    kind: str = "timeseries"  # or "stat"
    width: int = 8
    thresholds: tuple[tuple[float, str], ...] = ()  # (value, color) lines
    min: float | None = None


def _rows(config: CascadeConfig | None) -> list[tuple[str, list[_Panel]]]:
    slo = config.slos.by_name(config.slos.default_class) if config is not None else None
    lat_hist = "cascade_request_latency_seconds"
    req_count = _n(lat_hist, "count")
    pred = "cascade_predicted_p99_seconds"
    level_sel = 'level="{level}", metric=~"$metric", ' + _POOL

    slos_row = [
        _Panel(
            "TTFT P50 / P99 by pool",
            "Time to first token observed at the ingress (histogram quantiles); the line is "
            "the default class's TTFT SLO.",
            (
                _Q(_hq(0.99, lat_hist, "pool", f'metric="ttft", {_POOL}'), "{{pool}} P99"),
                _Q(_hq(0.5, lat_hist, "pool", f'metric="ttft", {_POOL}'), "{{pool}} P50"),
            ),
            thresholds=((slo.ttft_s, "red"),) if slo else (),
        ),
        _Panel(
            "E2E P50 / P99 by pool",
            "End-to-end latency observed at the ingress; the line is the default class's E2E SLO.",
            (
                _Q(_hq(0.99, lat_hist, "pool", f'metric="e2e", {_POOL}'), "{{pool}} P99"),
                _Q(_hq(0.5, lat_hist, "pool", f'metric="e2e", {_POOL}'), "{{pool}} P50"),
            ),
            thresholds=((float(slo.e2e_s), "red"),) if slo and slo.e2e_s is not None else (),
        ),
        _Panel(
            "SLO attainment by class (E2E)",
            "Fraction of finished requests that met their class's E2E objective.",
            (
                _Q(
                    "1 - "
                    + _ratio_or_zero(
                        f'{_n("cascade_slo_violations_total")}{{metric="e2e", {_POOL}}}',
                        f'{req_count}{{metric="e2e", {_POOL}}}',
                        "class",
                    ),
                    "{{class}}",
                ),
            ),
            unit="percentunit",
            thresholds=((slo.quantile, "green"),) if slo else (),
        ),
        _Panel(
            "Predicted vs observed P99 (E2E)",
            "Mean of the P99s the router predicted per request vs the P99 observed at the "
            "ingress over the same window.",
            (
                _Q(
                    f'sum by (pool) (rate({_n(pred, "sum")}{{metric="e2e", {_POOL}}}{_RI})) / '
                    f'sum by (pool) (rate({_n(pred, "count")}{{metric="e2e", {_POOL}}}{_RI}))',
                    "{{pool}} predicted P99 (mean)",
                ),
                _Q(_hq(0.99, lat_hist, "pool", f'metric="e2e", {_POOL}'), "{{pool}} observed P99"),
            ),
            width=12,
        ),
        _Panel(
            "P99 exceedance rate (calibrated ≈ 1%)",
            "How often a request's observed latency exceeded its predicted P99. About 1% "
            "means the predicted quantiles are calibrated; more means the predictions are "
            "over-confident.",
            (
                _Q(
                    _ratio_or_zero(
                        f"{_n('cascade_prediction_exceedances_total')}{{{_POOL}}}",
                        f"{_n(pred, 'count')}{{{_POOL}}}",
                        "pool, metric",
                    ),
                    "{{pool}} {{metric}}",
                ),
            ),
            unit="percentunit",
            thresholds=((0.01, "orange"),),
            width=12,
        ),
    ]

    sigma, quant = "cascade_latency_sigma_seconds", "cascade_latency_quantile_seconds"
    level_row = [
        _Panel(
            "σ per replica ($metric)",
            "Standard deviation of the chosen latency metric on each replica (exported by "
            "the replica itself).",
            (
                _Q(
                    f"max by (pool, replica, metric) "
                    f"({_n(sigma)}{{{level_sel.format(level='replica')}}})",
                    "{{replica}} {{metric}}",
                ),
            ),
        ),
        _Panel(
            "σ per pool ($metric)",
            "Pool-level standard deviation: exact merge of the replicas' summaries.",
            (
                _Q(
                    f"max by (pool, metric) ({_n(sigma)}{{{level_sel.format(level='pool')}}})",
                    "{{pool}} {{metric}}",
                ),
            ),
        ),
        _Panel(
            "σ of the cluster (TTFT / ITL / E2E)",
            "Cluster-level standard deviation (all pools merged).",
            (
                _Q(
                    f'max by (metric) ({_n(sigma)}{{level="cluster", metric=~"ttft|itl|e2e"}})',
                    "{{metric}}",
                ),
            ),
        ),
        _Panel(
            "P99 per replica ($metric)",
            "P99 of the chosen metric on each replica, from its quantile sketch.",
            (
                _Q(
                    f'max by (pool, replica, metric) ({_n(quant)}{{quantile="0.99", '
                    f"{level_sel.format(level='replica')}}})",
                    "{{replica}} {{metric}}",
                ),
            ),
        ),
        _Panel(
            "P50 / P90 / P99 per pool ($metric)",
            "Pool quantiles from the merged sketches.",
            (
                _Q(
                    f"max by (pool, metric, quantile) "
                    f"({_n(quant)}{{{level_sel.format(level='pool')}}})",
                    "{{pool}} {{metric}} q{{quantile}}",
                ),
            ),
        ),
        _Panel(
            "P50 / P90 / P99 of the cluster (TTFT / ITL / E2E)",
            "Cluster quantiles from the merged sketches.",
            (
                _Q(
                    f"max by (metric, quantile) "
                    f'({_n(quant)}{{level="cluster", metric=~"ttft|itl|e2e"}})',
                    "{{metric}} q{{quantile}}",
                ),
            ),
        ),
        _Panel(
            "Samples behind the statistics ($metric)",
            "How many samples each pool's and the cluster's statistics rest on: a σ or P99 "
            "from few samples is itself uncertain.",
            (
                _Q(
                    f"max by (level, pool, metric) "
                    f'({_n("cascade_latency_samples")}{{level=~"pool|cluster", '
                    f'metric=~"$metric"}})',
                    "{{level}} {{pool}} {{metric}}",
                ),
            ),
            unit="none",
            width=24,
        ),
    ]

    coef = _n("cascade_model_coefficient")
    pre, dec = _n("cascade_pool_prefill_sigma_seconds"), _n("cascade_pool_decode_sigma_seconds")
    kv = _n("cascade_pool_kv_usage_ratio")
    cascade_row = [
        _Panel(
            "Prefill σ vs decode σ by pool",
            "Recent (decayed) σ of prefill step time and of decode inter-token latency: "
            "the cascade carries the first into the second through the KV cache.",
            (
                _Q(f"max by (pool) ({pre}{{{_POOL}}})", "{{pool}} prefill σ"),
                _Q(f"max by (pool) ({dec}{{{_POOL}}})", "{{pool}} decode σ"),
            ),
        ),
        _Panel(
            "Decode σ: observed vs cascade model (h = 1)",
            "The fitted model's decode σ = exp(log_scale) · σ_p^a · (1+kv)^b at each pool's "
            "prefill σ and KV usage (batch heterogeneity taken as 1), against the observed.",
            (
                _Q(
                    f'scalar(exp(max({coef}{{coefficient="log_scale"}}))) * '
                    f"(max by (pool) ({pre}{{{_POOL}}}) ^ "
                    f'scalar(max({coef}{{coefficient="a_prefill"}}))) * '
                    f"((1 + max by (pool) ({kv}{{{_POOL}}})) ^ "
                    f'scalar(max({coef}{{coefficient="b_kv"}})))',
                    "{{pool}} model",
                ),
                _Q(f"max by (pool) ({dec}{{{_POOL}}})", "{{pool}} observed"),
            ),
        ),
        _Panel(
            "Cascade coefficients",
            "a: prefill → decode elasticity; b: KV pressure; c: batch heterogeneity.",
            (
                _Q(
                    f'max by (coefficient) ({coef}{{coefficient=~"a_prefill|b_kv|'
                    f'c_heterogeneity"}})',
                    "{{coefficient}}",
                ),
            ),
            unit="none",
        ),
        _Panel(
            "Cascade fit: residual σ and samples",
            "Std of the fit's log-residuals (multiplicative noise) and the decayed sample count.",
            (
                _Q(f'max({coef}{{coefficient="residual_std"}})', "residual σ (log)"),
                _Q(f"max({_n('cascade_model_samples')})", "samples (n_eff)"),
            ),
            unit="none",
            width=12,
        ),
    ]

    bp_row = [
        _Panel(
            "Backpressure saturation by pool",
            "Saturation ≥ 1 means new prefills are held or shed.",
            (
                _Q(
                    f"max by (pool) ({_n('cascade_backpressure_saturation_ratio')}{{{_POOL}}})",
                    "{{pool}}",
                ),
            ),
            unit="none",
            thresholds=((1.0, "red"),),
            min=0.0,
        ),
        _Panel(
            "Admission budget by pool",
            "Prefill tokens per second admitted to new requests.",
            (
                _Q(
                    f"max by (pool) "
                    f"({_n('cascade_admission_budget_tokens_per_second')}{{{_POOL}}})",
                    "{{pool}}",
                ),
            ),
            unit="none",
        ),
        _Panel(
            "Admission decisions by class",
            "Requests per second admitted, rejected or deferred at the ingress.",
            (
                _Q(
                    f"sum by (class, outcome) "
                    f"(rate({_n('cascade_admission_decisions_total')}{_RI}))",
                    "{{class}} {{outcome}}",
                ),
            ),
            unit="reqps",
        ),
        _Panel(
            "KV-cache usage by pool",
            "Mean fraction of KV blocks in use across a pool's replicas.",
            (
                _Q(
                    f"max by (pool) ({kv}{{{_POOL}}})",
                    "{{pool}}",
                ),
            ),
            unit="percentunit",
            width=12,
        ),
        _Panel(
            "Running and waiting requests by pool",
            "Requests in the engines' batches and in their queues.",
            (
                _Q(
                    f"max by (pool) ({_n('cascade_pool_running_requests')}{{{_POOL}}})",
                    "{{pool}} running",
                ),
                _Q(
                    f"max by (pool) ({_n('cascade_pool_waiting_requests')}{{{_POOL}}})",
                    "{{pool}} waiting",
                ),
            ),
            unit="none",
            width=12,
        ),
        _Panel(
            "KV-cache usage per replica",
            "Fraction of each replica's KV blocks in use (exported by the replica).",
            (
                _Q(
                    f"max by (pool, replica) ({_n('cascade_replica_kv_usage_ratio')}{{{_POOL}}})",
                    "{{replica}}",
                ),
            ),
            unit="percentunit",
            width=12,
        ),
        _Panel(
            "Running and waiting requests per replica",
            "Each replica's batch and queue (exported by the replica).",
            (
                _Q(
                    f"max by (pool, replica) ({_n('cascade_replica_running_requests')}{{{_POOL}}})",
                    "{{replica}} running",
                ),
                _Q(
                    f"max by (pool, replica) ({_n('cascade_replica_waiting_requests')}{{{_POOL}}})",
                    "{{replica}} waiting",
                ),
            ),
            unit="none",
            width=12,
        ),
    ]

    alloc_row = [
        _Panel(
            "Routing weights (class → pool)",
            "Fraction of each class's requests the Plan sends to each pool.",
            (
                _Q(
                    f"max by (class, pool) ({_n('cascade_routing_weight_ratio')}{{{_POOL}}})",
                    "{{class}} → {{pool}}",
                ),
            ),
            unit="percentunit",
            min=0.0,
        ),
        _Panel(
            "Replicas: target vs running",
            "Replicas the Plan asks for and replicas reporting fresh snapshots.",
            (
                _Q(
                    f"max by (pool) ({_n('cascade_pool_target_replicas')}{{{_POOL}}})",
                    "{{pool}} target",
                ),
                _Q(
                    f"max by (pool) ({_n('cascade_pool_running_replicas')}{{{_POOL}}})",
                    "{{pool}} running",
                ),
            ),
            unit="none",
            min=0.0,
        ),
        _Panel(
            "Router decision latency P50 / P99",
            "Time the request router takes to pick a replica.",
            (
                _Q(
                    _hq(0.99, "cascade_router_decision_seconds", "pool", _POOL),
                    "{{pool}} P99",
                ),
                _Q(
                    _hq(0.5, "cascade_router_decision_seconds", "pool", _POOL),
                    "{{pool}} P50",
                ),
            ),
        ),
        _Panel(
            "Request rate by pool",
            "Finished requests per second, observed at the ingress.",
            (
                _Q(
                    f'sum by (pool) (rate({req_count}{{metric="e2e", {_POOL}}}{_RI}))',
                    "{{pool}}",
                ),
            ),
            unit="reqps",
            width=24,
        ),
    ]

    solve = "cascade_optimizer_solve_seconds"
    health_row = [
        _Panel(
            "Optimizer solve time P50 / P99",
            "Wall time of the routing optimizer's solves.",
            (
                _Q(_hq(0.99, solve, "status", ""), "{{status}} P99"),
                _Q(_hq(0.5, solve, "status", ""), "{{status}} P50"),
            ),
        ),
        _Panel(
            "Solves by status",
            "Optimizer solves per second: optimal, fallback (infeasible or failed, safe "
            "plan kept) or static (no optimizer or not enough telemetry).",
            (_Q(f"sum by (status) (rate({_n(solve, 'count')}{_RI}))", "{{status}}"),),
            unit="ops",
        ),
        _Panel(
            "Current plan status",
            "1 marks the status of the latest Plan.",
            (_Q(f"max by (status) ({_n('cascade_plan_status')})", "{{status}}"),),
            unit="none",
            kind="stat",
        ),
        _Panel(
            "Controller steps per second",
            "Rate of controller steps (about 1 / snapshot period when healthy).",
            (_Q(f"sum(rate({_n('cascade_controller_steps_total')}{_RI}))", "steps/s"),),
            unit="ops",
        ),
        _Panel(
            "Plan version",
            "Version of the latest Plan; a flat line means the controller stopped.",
            (_Q(f"max({_n('cascade_plan_version')})", "version"),),
            unit="none",
            kind="stat",
        ),
        _Panel(
            "Stale replicas",
            "Replicas whose latest snapshot is older than loops.stale_after_s.",
            (_Q(f"max({_n('cascade_stale_replicas')})", "stale"),),
            unit="none",
            kind="stat",
            thresholds=((1.0, "orange"),),
        ),
    ]
    return [
        ("SLOs and tails", slos_row),
        ("Uncertainty by level (replica → pool → cluster)", level_row),
        ("The cascade: prefill σ → decode σ", cascade_row),
        ("Backpressure", bp_row),
        ("Allocation and routing", alloc_row),
        ("Controller health", health_row),
    ]


def _thresholds(lines: Sequence[tuple[float, str]]) -> dash_b.ThresholdsConfig:
    steps = [dash_m.Threshold(value=None, color="transparent")]
    steps += [dash_m.Threshold(value=v, color=c) for v, c in lines]
    return dash_b.ThresholdsConfig().mode(dash_m.ThresholdsMode.ABSOLUTE).steps(steps)


def _build_panel(p: _Panel, panel_id: int) -> Any:
    targets = [
        prom_b.Dataquery()
        .expr(q.expr)
        .legend_format(q.legend)
        .ref_id(chr(ord("A") + i))
        .datasource(_DS)
        for i, q in enumerate(p.queries)
    ]
    builder: Any
    if p.kind == "stat":
        builder = stat_b.Panel()
    else:
        builder = ts_b.Panel().line_width(1).fill_opacity(5)
        if p.thresholds:
            builder = builder.thresholds_style(
                common_b.GraphThresholdsStyleConfig().mode(common_m.GraphThresholdsStyleMode.DASHED)
            )
    builder = (
        builder.id(panel_id)
        .title(p.title)
        .description(p.description)
        .datasource(_DS)
        .unit(p.unit)
        .height(8)
        .span(p.width)
        .targets(targets)
    )
    if p.thresholds:
        builder = builder.thresholds(_thresholds(p.thresholds))
    if p.min is not None:
        builder = builder.min(p.min)
    return builder


def build_dashboard(config: CascadeConfig | None = None) -> dict[str, Any]:
    """The dashboard's JSON model. With ``config``, SLO lines come from its default
    class; without, the latency panels have no SLO line."""
    b = (
        dash_b.Dashboard(DASHBOARD_TITLE)
        .uid(DASHBOARD_UID)
        .description(
            "Latency uncertainty (σ and tails) per replica, pool and cluster; the "
            "prefill→decode cascade; backpressure; routing and allocation; controller health."
        )
        .tags(list(DASHBOARD_TAGS))
        .refresh("10s")
        .time("now-30m", "now")
        .timezone("browser")
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dash_b.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dash_b.QueryVariable("pool")
            .label("Pool")
            .query(f"label_values({_n('cascade_pool_target_replicas')}, pool)")
            .datasource(_DS)
            .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(VARIABLE_DEFAULTS["pool"])
            .current(dash_m.VariableOption(selected=True, text="All", value="$__all"))
        )
        .with_variable(
            dash_b.CustomVariable("metric")
            .label("Latency metric")
            .values(",".join(LATENCY_METRICS))
            .multi(True)
            .current(
                dash_m.VariableOption(
                    selected=True,
                    text=VARIABLE_DEFAULTS["metric"],
                    value=VARIABLE_DEFAULTS["metric"],
                )
            )
        )
    )
    panel_id = 1
    for title, panels in _rows(config):
        b = b.with_row(dash_b.Row(title).id(panel_id))
        panel_id += 1
        for p in panels:
            b = b.with_panel(_build_panel(p, panel_id))
            panel_id += 1
    model: dict[str, Any] = json.loads(json.dumps(b.build(), cls=JSONEncoder))
    return model


def dashboard_json(config: CascadeConfig | None = None) -> str:
    """The dashboard as stable, pretty JSON text (what ``export`` writes)."""
    return json.dumps(build_dashboard(config), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _targets(model: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for panel in model.get("panels", []):
        out.extend(panel.get("targets", []) or [])
        for inner in panel.get("panels", []) or []:  # collapsed rows hold their panels
            out.extend(inner.get("targets", []) or [])
    return out


def resolve_variables(expr: str, values: Mapping[str, str] = VARIABLE_DEFAULTS) -> str:
    """Replace Grafana variables (``$name``, ``${name}``, ``[[name]]``) by ``values``;
    ``KeyError`` for a variable without a value."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"no value for dashboard variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]", sub, expr)


def dashboard_queries(
    config: CascadeConfig | None = None,
    *,
    raw: bool = False,
    values: Mapping[str, str] = VARIABLE_DEFAULTS,
) -> list[str]:
    """Every PromQL expression in the dashboard, in panel order, deduplicated.

    By default the template variables are replaced by ``values`` (the dashboard's
    defaults: all pools, ITL, a 1 m rate window), so each string can be sent to
    Prometheus' ``/api/v1/query`` as is; ``raw=True`` returns them as in the JSON.
    """
    seen: dict[str, None] = {}
    for t in _targets(build_dashboard(config)):
        expr = t.get("expr")
        if isinstance(expr, str) and expr:
            seen.setdefault(expr if raw else resolve_variables(expr, values))
    return list(seen)


# ---- push ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PushResult:
    """What ``push_dashboard`` did: ``created``, ``updated`` or ``unchanged``."""

    action: str
    uid: str
    version: int | None = None
    url: str | None = None


def _contains(have: Any, want: Any) -> bool:
    """True when ``have`` holds every field of ``want`` with the same value (Grafana
    adds fields of its own on save, so equality would never hold)."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(
            k in have and _contains(have[k], v) for k, v in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(have) == len(want)
            and all(_contains(h, w) for h, w in zip(have, want, strict=True))
        )
    if isinstance(want, float) or isinstance(have, float):
        return isinstance(have, int | float) and float(have) == float(want)
    return bool(have == want)


def push_dashboard(
    url: str,
    token: str | None = None,
    *,
    dashboard: Mapping[str, Any] | None = None,
    folder_uid: str | None = None,
    message: str = "cascade dashboard push",
    timeout_s: float = 10.0,
) -> PushResult:
    """Create or update the dashboard in the Grafana at ``url`` (``grafana-client``).

    ``token`` is a service-account token (sent as ``Authorization: Bearer``); without
    it, credentials in the URL (``http://user:pass@host:3000``) are used if present.
    Idempotent: same uid every time, ``overwrite: true``, and no write at all when
    the server's copy already contains ours. Raises ``ValueError`` for an HTTP or
    connection failure (message names the URL and the status).
    """
    from grafana_client.api import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    model = dict(dashboard if dashboard is not None else build_dashboard())
    uid = str(model.get("uid") or DASHBOARD_UID)
    model["uid"] = uid
    model.pop("version", None)
    model["id"] = None  # address by uid; Grafana assigns the numeric id
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    try:
        try:
            existing = api.dashboard.get_dashboard(uid)
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            existing = None
        if existing is not None:
            ours = {k: v for k, v in model.items() if k not in ("id", "version")}
            if _contains(existing.get("dashboard", {}), ours):
                ver = existing.get("dashboard", {}).get("version")
                return PushResult("unchanged", uid, ver, existing.get("meta", {}).get("url"))
        body: dict[str, Any] = {"dashboard": model, "overwrite": True, "message": message}
        if folder_uid is not None:
            body["folderUid"] = folder_uid
        resp = api.dashboard.update_dashboard(body)
    except GrafanaException as exc:
        raise ValueError(f"grafana at {url}: HTTP {exc.status_code}: {exc.message}") from None
    except OSError as exc:  # connection refused, DNS, timeouts from the transport
        raise ValueError(f"grafana at {url}: {exc}") from None
    except Exception as exc:  # niquests' ConnectionError is not an OSError
        if type(exc).__module__.startswith(("niquests", "urllib3")):
            raise ValueError(f"grafana at {url}: {exc}") from None
        raise
    action = "created" if existing is None else "updated"
    return PushResult(action, uid, resp.get("version"), resp.get("url"))


# ---- Prometheus and the Ray dashboard --------------------------------------------------------
def prometheus_config(
    sd_file: str | Path = RAY_SD_FILE,
    *,
    scrape_interval: str = "5s",
    evaluation_interval: str = "5s",
    job_name: str = "ray",
) -> str:
    """A prometheus.yml that scrapes every Ray node in Ray's service-discovery file
    (Ray rewrites it as nodes join and leave; Prometheus re-reads it)."""
    for name, value in (
        ("scrape_interval", scrape_interval),
        ("evaluation_interval", evaluation_interval),
    ):
        if not re.fullmatch(r"\d+(ms|s|m|h)", value):
            raise ValueError(f"{name}={value!r}: use a Prometheus duration such as 5s")
    import yaml

    cfg = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "scrape_configs": [
            {"job_name": job_name, "file_sd_configs": [{"files": [str(sd_file)]}]},
        ],
    }
    return "# written by cascade (orchestrator.dashboard.prometheus_config)\n" + yaml.safe_dump(
        cfg, sort_keys=False
    )


def write_prometheus_config(path: str | Path, sd_file: str | Path = RAY_SD_FILE, **kw: str) -> Path:
    """Write ``prometheus_config(sd_file, **kw)`` to ``path``; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(prometheus_config(sd_file, **kw))
    return p
