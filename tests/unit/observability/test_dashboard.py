"""The Grafana dashboard as code, its queries, its push, and the Prometheus glue."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.config import EXAMPLES_DIR, load_config
from orchestrator.dashboard import (
    DASHBOARD_UID,
    RAY_SD_FILE,
    build_dashboard,
    dashboard_json,
    dashboard_queries,
    prometheus_config,
    push_dashboard,
    resolve_variables,
    write_prometheus_config,
)
from orchestrator.metrics import BY_NAME, METRICS

ROWS = [
    "SLOs and tails",
    "Uncertainty by level (replica → pool → cluster)",
    "The cascade: prefill σ → decode σ",
    "Backpressure",
    "Allocation and routing",
    "Controller health",
]


def test_one_dashboard_with_the_six_rows_and_typed_panels() -> None:
    d = build_dashboard()
    assert d["uid"] == DASHBOARD_UID
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    assert rows == ROWS
    panels = [p for p in d["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["targets"], p["title"]
        assert all(t["expr"] and t["refId"] for t in p["targets"])
    # every row has panels under it (rows are followed by at least two panels)
    kinds = [p["type"] for p in d["panels"]]
    starts = [i for i, k in enumerate(kinds) if k == "row"] + [len(kinds)]
    assert all(b - a >= 3 for a, b in itertools.pairwise(starts))
    names = [v["name"] for v in d["templating"]["list"]]
    assert names == ["datasource", "pool", "metric"]


def test_every_metric_of_the_table_is_on_the_dashboard_and_only_those() -> None:
    queries = " ".join(dashboard_queries())
    for m in METRICS:
        assert m.prometheus_name in queries, m.name
    used = set(re.findall(r"\bray_(cascade_\w+)", queries))
    for name in used:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in BY_NAME or base in BY_NAME, name


def test_queries_are_resolved_and_aggregate_away_ray_process_labels() -> None:
    raw = dashboard_queries(raw=True)
    resolved = dashboard_queries()
    assert len(raw) == len(resolved) >= 30
    assert any("$pool" in q for q in raw) and any("$__rate_interval" in q for q in raw)
    for q in resolved:
        assert "$" not in q and "[[" not in q, q
        assert q.count("(") == q.count(")") and q.count("{") == q.count("}"), q
        # a bare series would split on WorkerId/NodeAddress: every query aggregates
        assert re.search(r"\b(max|sum|histogram_quantile)\b", q), q
    with pytest.raises(KeyError, match=r"\$nope"):
        resolve_variables('up{x=~"$nope"}')


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) absent")
def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "cascade-dashboard",
                "rules": [
                    {"record": f"cascade:dashboard_query:{i}", "expr": q}
                    for i, q in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    f = tmp_path / "rules.yml"
    f.write_text(yaml.safe_dump(rules))
    out = subprocess.run(["promtool", "check", "rules", str(f)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _panel(d: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in d["panels"] if p.get("title") == title)


def test_slo_lines_come_from_the_config() -> None:
    config = load_config(EXAMPLES_DIR / "cluster.yaml")
    d = build_dashboard(config)
    steps = _panel(d, "TTFT P50 / P99 by pool")["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 10.0]  # the default class, batch: ttft_s 10
    steps = _panel(d, "E2E P50 / P99 by pool")["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 120.0]
    bare = _panel(build_dashboard(), "TTFT P50 / P99 by pool")
    assert "thresholds" not in bare.get("fieldConfig", {}).get("defaults", {})


def test_export_cli_writes_the_dashboard_json(tmp_path: Path) -> None:
    out = tmp_path / "d" / "cascade.json"
    assert main(["dashboard", "export", "--out", str(out)]) == 0
    assert out.read_text() == dashboard_json()
    assert json.loads(out.read_text())["uid"] == DASHBOARD_UID


# ---- push against a loopback "Grafana" ---------------------------------------------------------
class _FakeGrafana(BaseHTTPRequestHandler):
    """Implements the two endpoints the push uses, like Grafana's HTTP API does."""

    store: dict[str, Any]
    requests: list[tuple[str, str, dict[str, str], Any]]
    token = "s3cret"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _auth_ok(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.token}"

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, dict(self.headers), None))
        if not self._auth_ok():
            return self._send(401, {"message": "Unauthorized"})
        m = re.fullmatch(r"/api/dashboards/uid/([\w-]+)", self.path)
        if m and m.group(1) in self.store:
            saved = self.store[m.group(1)]
            return self._send(200, {"dashboard": saved, "meta": {"url": f"/d/{saved['uid']}/x"}})
        return self._send(404, {"message": "Dashboard not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        self.requests.append(("POST", self.path, dict(self.headers), body))
        if not self._auth_ok():
            return self._send(401, {"message": "Unauthorized"})
        if self.path != "/api/dashboards/db":
            return self._send(404, {"message": "not found"})
        dash = body["dashboard"]
        uid = dash["uid"]
        if uid in self.store and not body.get("overwrite"):
            return self._send(412, {"status": "version-mismatch"})
        version = self.store.get(uid, {}).get("version", 0) + 1
        saved = json.loads(json.dumps(dash))
        # Grafana adds fields of its own on save
        saved.update({"id": 7, "version": version})
        for p in saved.get("panels", []):
            p.setdefault("pluginVersion", "11.6.0")
        self.store[uid] = saved
        resp = {"id": 7, "uid": uid, "url": f"/d/{uid}/x", "status": "success"}
        return self._send(200, {**resp, "version": version})


@pytest.fixture
def grafana() -> Iterator[tuple[str, type[_FakeGrafana]]]:
    handler = type("Handler", (_FakeGrafana,), {"store": {}, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_push_creates_then_is_idempotent_then_updates(
    grafana: tuple[str, type[_FakeGrafana]],
) -> None:
    url, h = grafana
    first = push_dashboard(url, "s3cret")
    assert (first.action, first.uid, first.version) == ("created", DASHBOARD_UID, 1)
    posts = [r for r in h.requests if r[0] == "POST"]
    assert len(posts) == 1
    _, path, headers, body = posts[0]
    assert path == "/api/dashboards/db"
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Content-Type"].startswith("application/json")
    assert body["overwrite"] is True and body["message"]
    assert body["dashboard"]["uid"] == DASHBOARD_UID and body["dashboard"]["id"] is None
    assert body["dashboard"]["panels"] == build_dashboard()["panels"]

    again = push_dashboard(url, "s3cret")  # Grafana's copy already holds ours
    assert again.action == "unchanged" and again.version == 1
    assert len([r for r in h.requests if r[0] == "POST"]) == 1

    changed = push_dashboard(url, "s3cret", dashboard=build_dashboard(load_config()))
    assert (changed.action, changed.version) == ("updated", 2)
    assert len(h.store) == 1  # same uid: never a duplicate


def test_push_reports_auth_failures_as_one_line(grafana: tuple[str, type[_FakeGrafana]]) -> None:
    url, _ = grafana
    with pytest.raises(ValueError, match="HTTP 401"):
        push_dashboard(url, "wrong")


def test_push_cli_with_token_from_the_environment(
    grafana: tuple[str, type[_FakeGrafana]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _h = grafana
    monkeypatch.setenv("GRAFANA_TOKEN", "s3cret")
    assert main(["dashboard", "push", "--url", url]) == 0
    assert "created" in capsys.readouterr().out
    assert main(["dashboard", "push", "--url", url]) == 0
    assert "unchanged" in capsys.readouterr().out
    monkeypatch.delenv("GRAFANA_TOKEN")
    assert main(["dashboard", "push", "--url", url, "--token", "bad"]) == 2
    assert "HTTP 401" in capsys.readouterr().err


def test_push_to_nothing_listening_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1:9"):
        push_dashboard("http://127.0.0.1:9", "t", timeout_s=2.0)


# ---- Prometheus and the Ray dashboard ----------------------------------------------------------
def test_prometheus_config_scrapes_rays_service_discovery_file(tmp_path: Path) -> None:
    cfg = yaml.safe_load(prometheus_config())
    (job,) = cfg["scrape_configs"]
    assert job["file_sd_configs"] == [{"files": [RAY_SD_FILE]}]
    assert cfg["global"]["scrape_interval"] == "5s"
    out = tmp_path / "p" / "prometheus.yml"
    p = write_prometheus_config(out, "/x/sd.json", scrape_interval="2s")
    written = yaml.safe_load(p.read_text())
    assert written["scrape_configs"][0]["file_sd_configs"][0]["files"] == ["/x/sd.json"]
    with pytest.raises(ValueError, match="duration"):
        prometheus_config(scrape_interval="5 seconds")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) absent")
def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": ["127.0.0.1:8080"]}]))
    p = write_prometheus_config(tmp_path / "prometheus.yml", sd)
    out = subprocess.run(["promtool", "check", "config", str(p)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_docs_list_every_metric_under_its_prometheus_name() -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "observability.md").read_text()
    for m in METRICS:
        assert f"`{m.prometheus_name}" in text, m.prometheus_name
