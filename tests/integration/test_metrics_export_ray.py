"""Cascade's exporters through Ray's real metrics pipeline: the names and labels
Prometheus scrapes are the ones the table and the dashboard promise."""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.ray_state import free_port

pytestmark = pytest.mark.ray


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def test_exported_series_carry_the_ray_prefix_and_our_labels() -> None:
    ray = pytest.importorskip("ray", exc_type=ImportError)  # blocked when run with tests/unit
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.unit.observability.fakes import view_and_plan

    port = free_port()
    ray.init(
        num_cpus=1,
        include_dashboard=False,
        _metrics_export_port=port,
        _system_config={"metrics_report_interval_ms": 500},
    )
    try:

        @ray.remote(num_cpus=0)
        class Exporter:
            def run(self) -> None:
                from orchestrator.metrics import ControllerMetrics, IngressMetrics, ReplicaMetrics

                view, plan, snaps = view_and_plan()
                c = ControllerMetrics()
                c.export(view, plan, solve_ms=12.0)
                r = ReplicaMetrics()  # ray.serve.metrics outside a replica: no Serve tags
                r.export(snaps[0])
                i = IngressMetrics(slos={})
                i.observe_admission("default", "admitted")
                i.observe_request(
                    "llm-h100",
                    "default",
                    ttft_s=0.2,
                    e2e_s=2.0,
                    predicted_ttft_p99_s=0.1,
                    predicted_e2e_p99_s=3.0,
                )

            def keep(self) -> None:  # gauges must be re-set to stay exported
                self.run()

        a = Exporter.remote()
        ray.get(a.run.remote())
        expected = [
            "ray_cascade_plan_version{",
            "ray_cascade_controller_steps_total{",
            "ray_cascade_optimizer_solve_seconds_bucket{",
            "ray_cascade_admission_decisions_total{",
            "ray_cascade_prediction_exceedances_total{",
            "ray_cascade_request_latency_seconds_count{",
            "ray_cascade_latency_sigma_seconds{",
        ]
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            ray.get(a.keep.remote())
            text = _scrape(port)
            if all(e in text for e in expected) and 'level="cluster"' in text:
                break
            time.sleep(1.0)
        missing = [e for e in expected if e not in text]
        assert not missing, (
            f"missing {missing}; cascade lines: "
            + "\n".join(ln for ln in text.splitlines() if "cascade" in ln)[:4000]
        )
        lines = [ln for ln in text.splitlines() if ln.startswith("ray_cascade_latency_sigma")]
        assert any('level="replica"' in ln and 'pool="llm-h100"' in ln for ln in lines)
        assert any('level="pool"' in ln for ln in lines)
        # the cluster level has no pool: Prometheus drops empty labels
        assert any('level="cluster"' in ln for ln in lines), lines
    finally:
        ray.shutdown()
