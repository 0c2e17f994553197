"""Rendering the KubeRay manifests from the Cascade config, and the committed ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s.render import RenderOptions, ray_dashboard_env, render_manifests, serve_config, to_yaml
from k8s.validate import validate_documents, validate_file
from orchestrator.cli import main
from orchestrator.config import EXAMPLES_DIR, load_config, parse_config
from orchestrator.dashboard import dashboard_json
from orchestrator.k8s_cli import cascade_pools, service_spec

REPO = EXAMPLES_DIR.parent
CLUSTER = EXAMPLES_DIR / "cluster.yaml"
MANIFESTS = sorted((REPO / "k8s" / "manifests").glob("*.yaml"))


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render_manifests(service_spec(load_config(CLUSTER)))


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("config", [CLUSTER, EXAMPLES_DIR / "default.yaml"], ids=lambda p: p.name)
def test_rendered_manifests_validate(config: Path) -> None:
    docs = render_manifests(service_spec(load_config(config)))
    assert [d["kind"] for d in docs] == ["RayService", "PodMonitor", "ConfigMap", "NetworkPolicy"]
    assert validate_documents(docs, check_config=cascade_pools) == []
    # and so does the printed stream, parsed back
    assert validate_documents(yaml.safe_load_all(to_yaml(docs)), check_config=cascade_pools) == []


def test_one_gpu_worker_group_per_pool(docs: list[dict[str, Any]]) -> None:
    config = load_config(CLUSTER)
    cluster = docs[0]["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"llm-h100", "llm-a100"}
    for pool in config.pools:
        g = groups[pool.name]
        assert (g["minReplicas"], g["maxReplicas"], g["replicas"]) == (
            pool.min_replicas,
            pool.max_replicas,
            pool.start_replicas,
        )
        assert g["resources"] == {f"accelerator_type:{pool.accelerator}": "1"}
        pod = g["template"]["spec"]
        (c,) = pod["containers"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == str(pool.tp_size)
        assert c["resources"]["requests"]["nvidia.com/gpu"] == str(pool.tp_size)
        assert pod["nodeSelector"] == pool.node_selector
        product = pod["nodeSelector"]["nvidia.com/gpu.product"]
        assert product.startswith(f"NVIDIA-{pool.accelerator}")
        toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        assert toleration in pod["tolerations"]


def test_head_embeds_grafana_in_the_ray_dashboard(docs: list[dict[str, Any]]) -> None:
    head = docs[0]["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in head["containers"][0]["env"]}
    for key in ("RAY_GRAFANA_HOST", "RAY_PROMETHEUS_HOST", "RAY_GRAFANA_IFRAME_HOST"):
        assert env[key].startswith("http://")
    opts = RenderOptions(grafana_iframe_host="https://grafana.example.com")
    other = render_manifests(service_spec(load_config(CLUSTER)), opts)[0]
    c = other["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "RAY_GRAFANA_IFRAME_HOST", "value": "https://grafana.example.com"} in c["env"]


def test_serve_config_carries_the_same_cascade_config_inline(docs: list[dict[str, Any]]) -> None:
    config = load_config(CLUSTER)
    serve = yaml.safe_load(docs[0]["spec"]["serveConfigV2"])
    assert serve == serve_config(service_spec(config))
    (app,) = serve["applications"]
    assert app["import_path"] == "orchestrator.app:build_app"
    assert parse_config(yaml.safe_load(app["args"]["config"])) == config


def test_podmonitor_selects_every_ray_pod_of_this_service(docs: list[dict[str, Any]]) -> None:
    rs, pm, _, _ = docs
    selector = pm["spec"]["selector"]["matchLabels"]
    cluster = rs["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    for group in pods:
        labels = group["template"]["metadata"]["labels"]
        assert _labels_match(selector, labels), labels
        ports = {p["name"] for p in group["template"]["spec"]["containers"][0]["ports"]}
        assert "metrics" in ports
    assert {e["port"] for e in pm["spec"]["podMetricsEndpoints"]} >= {"metrics"}
    assert pm["metadata"]["labels"]["release"] == "prometheus"


def test_configmap_holds_the_dashboard(docs: list[dict[str, Any]]) -> None:
    cm = docs[2]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = cm["data"].values()
    assert text == dashboard_json(load_config(CLUSTER))
    assert json.loads(text)["uid"] == "cascade-overview"


def test_namespace_option_reaches_every_object() -> None:
    docs = render_manifests(service_spec(load_config(CLUSTER)), RenderOptions(namespace="llm"))
    assert {d["metadata"]["namespace"] for d in docs} == {"llm"}
    assert validate_documents(docs, check_config=cascade_pools) == []


def test_committed_manifests_validate_and_match_a_fresh_render(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert MANIFESTS, "k8s/manifests/ holds no manifest"
    for path in MANIFESTS:
        assert validate_file(path, check_config=cascade_pools) == [], path
    committed = REPO / "k8s" / "manifests" / "cascade-llama3-8b.yaml"
    assert main(["k8s", "render"]) == 0  # default: examples/cluster.yaml
    fresh = capsys.readouterr().out
    assert fresh == committed.read_text(), (
        "k8s/manifests/cascade-llama3-8b.yaml is stale: re-run "
        "`cascade k8s render --out k8s/manifests/cascade-llama3-8b.yaml`"
    )


def test_render_refuses_a_config_the_operator_would_reject(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(CLUSTER.read_text())
    data["name"] = "cascade-" + "x" * 45  # 53 characters: over KubeRay's 47
    f = tmp_path / "long.yaml"
    f.write_text(yaml.safe_dump(data))
    assert main(["k8s", "render", "--config", str(f)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "RayService name should be no more than 47 characters" in captured.err


def test_render_to_a_file_then_validate_it_with_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.yaml"
    assert main(["k8s", "render", "--namespace", "llm", "--out", str(out)]) == 0
    assert main(["k8s", "validate", str(out)]) == 0
    assert (
        "OK (1 RayService, 1 PodMonitor, 1 ConfigMap, 1 NetworkPolicy)" in capsys.readouterr().out
    )


def test_ray_dashboard_env_needs_schemes_and_defaults_the_iframe_host() -> None:
    env = ray_dashboard_env("http://grafana:3000", "http://prom:9090")
    assert env == {
        "RAY_GRAFANA_HOST": "http://grafana:3000",
        "RAY_PROMETHEUS_HOST": "http://prom:9090",
        "RAY_GRAFANA_IFRAME_HOST": "http://grafana:3000",
        "RAY_PROMETHEUS_NAME": "Prometheus",
    }
    with pytest.raises(ValueError, match="RAY_PROMETHEUS_HOST"):
        ray_dashboard_env("http://grafana:3000", "prom:9090")
