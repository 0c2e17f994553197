"""Every PromQL expression of the dashboard returns data from a real Prometheus that
scrapes a real Ray cluster through Ray's service-discovery file, with every
Cascade exporter fed synthetic values (the app-level live test covers the wiring
of the exporters into the Serve app).

Needs Ray and Debian's ``prometheus`` binary (``apt-get install prometheus``);
skipped without the binary.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

PROMETHEUS = shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _query(port: int, expr: str) -> list[object]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus binary is not installed")
def test_every_dashboard_query_returns_data() -> None:
    ray = pytest.importorskip("ray", exc_type=ImportError)  # blocked when run with tests/unit
    from orchestrator.dashboard import dashboard_queries, write_prometheus_config

    temp = Path(tempfile.mkdtemp(prefix="cr", dir="/tmp"))  # short: Ray's socket paths
    prom_port = _free_port()
    ray.init(
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        _temp_dir=str(temp),
        _metrics_export_port=_free_port(),
        _system_config={"metrics_report_interval_ms": 1000},
    )
    prom: subprocess.Popen[bytes] | None = None
    try:
        sd = temp / "prom_metrics_service_discovery.json"
        deadline = time.monotonic() + 60
        while not sd.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sd.exists(), f"Ray wrote no service-discovery file at {sd}"
        cfg = write_prometheus_config(temp / "prometheus.yml", sd, scrape_interval="1s")
        prom = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={cfg}",
                f"--storage.tsdb.path={temp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        @ray.remote(num_cpus=0)
        class Feeder:
            def __init__(self) -> None:
                from orchestrator.metrics import (
                    ControllerMetrics,
                    IngressMetrics,
                    ReplicaMetrics,
                    RouterMetrics,
                    SloThresholds,
                )
                from tests.unit.observability.fakes import view_and_plan

                self.view, self.plan, self.snaps = view_and_plan()
                self.c, self.r, self.rt = ControllerMetrics(), ReplicaMetrics(), RouterMetrics()
                slo = {"default": SloThresholds(ttft_s=0.3, e2e_s=2.5)}
                self.i = IngressMetrics(slos=slo)
                self.k = 0

            def tick(self) -> None:
                self.k += 1
                self.c.export(self.view, self.plan, solve_ms=10.0 + self.k % 7)
                for s in self.snaps:
                    self.r.export(s)
                for j, pool in enumerate(("llm-h100", "llm-a100")):
                    for n in range(20):
                        x = 0.1 + 0.05 * ((n * 7 + self.k) % 11)
                        self.i.observe_request(
                            pool, "default", ttft_s=x, e2e_s=10 * x,
                            predicted_ttft_p99_s=0.55, predicted_e2e_p99_s=5.5 - j,
                        )  # fmt: skip
                        self.rt.observe_decision(1e-4 * (1 + n % 5), "cascade", pool)
                    self.i.observe_admission("default", "admitted")
                    self.i.observe_admission("default", "rejected")

        feeder = Feeder.remote()
        queries = dashboard_queries()
        missing = list(queries)
        deadline = time.monotonic() + 150
        while missing and time.monotonic() < deadline:
            ray.get(feeder.tick.remote())
            time.sleep(1.0)
            try:
                missing = [q for q in missing if not _query(prom_port, q)]
            except OSError:  # Prometheus still starting
                continue
        assert not missing, f"{len(missing)}/{len(queries)} queries returned no data: {missing}"
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(timeout=30)
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
