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
from orchestrator.dashboard_panels import Panel, series
from orchestrator.dashboard_rows import rows

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


def _thresholds(lines: Sequence[tuple[float, str]]) -> dash_b.ThresholdsConfig:
    steps = [dash_m.Threshold(value=None, color="transparent")]
    steps += [dash_m.Threshold(value=v, color=c) for v, c in lines]
    return dash_b.ThresholdsConfig().mode(dash_m.ThresholdsMode.ABSOLUTE).steps(steps)


def _build_panel(p: Panel, panel_id: int) -> Any:
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
            .query(f"label_values({series('cascade_pool_target_replicas')}, pool)")
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
    for title, panels in rows(config):
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
