"""The offline validator: API-server semantics, the KubeRay operator's rules, ours.

Each broken manifest is the rendered one with one thing broken, and must fail
with that one specific error (source, path, message).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s.render import render_manifests
from k8s.schema import iter_schema_errors, normalize, to_jsonschema
from k8s.validate import Issue, crd_dir, crd_schemas, validate_document, validate_file
from orchestrator.cli import main
from orchestrator.config import EXAMPLES_DIR, load_config
from orchestrator.k8s_cli import cascade_pools, service_spec

Doc = dict[str, Any]
RS, PM, CM = 0, 1, 2


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    return render_manifests(service_spec(load_config(EXAMPLES_DIR / "cluster.yaml")))


def _cluster(d: Doc) -> Doc:
    return d["spec"]["rayClusterConfig"]  # type: ignore[no-any-return]


def _wg(d: Doc, i: int = 0) -> Doc:
    return _cluster(d)["workerGroupSpecs"][i]  # type: ignore[no-any-return]


def _head_c(d: Doc) -> Doc:
    return _cluster(d)["headGroupSpec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def _serve(d: Doc, edit: Callable[[Doc], None]) -> None:
    cfg = yaml.safe_load(d["spec"]["serveConfigV2"])
    edit(cfg)
    d["spec"]["serveConfigV2"] = yaml.safe_dump(cfg)


def _cascade(d: Doc, edit: Callable[[Doc], None]) -> None:
    def inner(cfg: Doc) -> None:
        c = yaml.safe_load(cfg["applications"][0]["args"]["config"])
        edit(c)
        cfg["applications"][0]["args"]["config"] = yaml.safe_dump(c)

    _serve(d, inner)


def _set(d: Doc, key: str, value: Any) -> None:
    d[key] = value


# (id, document index, mutation, source, path fragment, message fragment)
CASES: list[tuple[str, int, Callable[[Doc], None], str, str, str]] = [
    # ---- API-server schema semantics (CRD openAPIV3Schema) -----------------------------------
    ("unknown-field", RS, lambda d: _set(_wg(d), "replicaz", 3), "schema",
     "workerGroupSpecs[0].replicaz", 'unknown field "replicaz"'),
    ("unknown-top-level-spec-field", RS, lambda d: _set(d["spec"], "serveConfig", "x"), "schema",
     "spec.serveConfig", 'unknown field "serveConfig"'),
    ("unknown-metadata-field", RS, lambda d: _set(d["metadata"], "label", {"a": "b"}), "schema",
     "metadata.label", 'unknown field "label"'),
    ("wrong-type", RS, lambda d: _set(_wg(d), "maxReplicas", "eight"), "schema",
     "workerGroupSpecs[0].maxReplicas", "is not of type 'integer'"),
    ("int32-overflow", RS, lambda d: _set(_wg(d), "maxReplicas", 2**40), "schema",
     "workerGroupSpecs[0].maxReplicas", "does not fit in int32"),
    ("missing-required", RS, lambda d: _cluster(d).pop("headGroupSpec"), "schema",
     "spec.rayClusterConfig", "Required value: 'headGroupSpec'"),
    ("int-or-string", RS,
     lambda d: _set(_wg(d)["template"]["spec"]["containers"][0]["resources"]["limits"], "cpu",
                    True),
     "schema", "resources.limits.cpu", "must be an integer or a string"),
    ("enum", RS, lambda d: _set(_cluster(d)["autoscalerOptions"], "upscalingMode", "Fast"),
     "schema", "autoscalerOptions.upscalingMode", "is not one of"),
    ("cel-enum", RS, lambda d: _set(d["spec"], "managedBy", "me"), "schema",
     "spec.managedBy", "must be either 'ray.io/kuberay-operator' or 'kueue.x-k8s.io/multikueue'"),
    ("duplicate-list-map-key", RS,
     lambda d: _head_c(d)["ports"].append({"name": "again", "containerPort": 8265}),
     "schema", "containers[0].ports", "duplicate entry"),
    # ---- metadata --------------------------------------------------------------------------
    ("bad-label-value", RS, lambda d: _set(d["metadata"]["labels"], "team", "x" * 64),
     "metadata", "metadata.labels.team", "at most 63"),
    # ---- KubeRay operator rules (validation.go, v1.7.0) ------------------------------------
    ("name-too-long", RS, lambda d: _set(d["metadata"], "name", "c" * 48), "kuberay",
     "metadata.name", "no more than 47 characters"),
    ("name-not-dns1035", RS, lambda d: _set(d["metadata"], "name", "1cascade"), "kuberay",
     "metadata.name", "valid DNS1035 label"),
    ("upgrade-type", RS, lambda d: _set(d["spec"]["upgradeStrategy"], "type", "Recreate"),
     "kuberay", "spec.upgradeStrategy.type", "Spec.UpgradeStrategy.Type value Recreate is invalid"),
    ("incremental-without-options", RS,
     lambda d: _set(d["spec"]["upgradeStrategy"], "type", "NewClusterWithIncrementalUpgrade"),
     "kuberay", "clusterUpgradeOptions", "ClusterUpgradeOptions are required"),
    ("min-over-max", RS, lambda d: _wg(d).update(minReplicas=5, maxReplicas=2), "kuberay",
     "workerGroupSpecs[0].minReplicas", "has minReplicas 5 greater than maxReplicas 2"),
    ("negative-min", RS, lambda d: _wg(d).update(minReplicas=-1), "kuberay",
     "workerGroupSpecs[0].minReplicas", "negative minReplicas -1"),
    ("no-container", RS, lambda d: _set(_wg(d, 1)["template"]["spec"], "containers", []),
     "kuberay", "workerGroupSpecs[1]", "at least one container"),
    ("resources-twice", RS, lambda d: _set(_wg(d)["rayStartParams"], "num-gpus", "1"), "kuberay",
     "workerGroupSpecs[0]", "should not be set in both rayStartParams and Resources"),
    ("raystart-labels", RS, lambda d: _set(_wg(d)["rayStartParams"], "labels", "a=b"), "kuberay",
     "rayStartParams.labels", "rayStartParams['labels'] is not supported"),
    ("idle-timeout-needs-v2", RS, lambda d: _set(_cluster(d)["autoscalerOptions"], "version", "v1"),
     "kuberay", "idleTimeoutSeconds", "autoscaler v2 is not enabled"),
    ("restart-policy-v2", RS,
     lambda d: _set(_wg(d)["template"]["spec"], "restartPolicy", "Always"), "kuberay",
     "restartPolicy", "should be Never or unset when using autoscaler V2"),
    ("duplicate-group", RS, lambda d: _set(_wg(d, 1), "groupName", "llm-h100"), "kuberay",
     "workerGroupSpecs[1].groupName", "duplicate worker group name 'llm-h100'"),
    ("named-head-service", RS,
     lambda d: _set(_cluster(d)["headGroupSpec"], "headService", {"metadata": {"name": "x"}}),
     "kuberay", "headService.metadata.name", "should not be set"),
    # ---- serveConfigV2 ------------------------------------------------------------------------
    ("serve-not-yaml", RS, lambda d: _set(d["spec"], "serveConfigV2", "applications: [\n"),
     "serve", "spec.serveConfigV2", "not valid YAML"),
    ("serve-missing", RS, lambda d: d["spec"].pop("serveConfigV2"), "serve",
     "spec.serveConfigV2", "serveConfigV2 is empty"),
    ("no-import-path", RS, lambda d: _serve(d, lambda c: c["applications"][0].pop("import_path")),
     "serve", "applications[0].import_path", "every application needs an import_path"),
    ("bad-import-path", RS,
     lambda d: _serve(d, lambda c: c["applications"][0].update(import_path="not a path")),
     "serve", "applications[0].import_path", "not of the form"),
    ("duplicate-app", RS,
     lambda d: _serve(d, lambda c: c["applications"].append(
         {**c["applications"][0], "route_prefix": "/b"})),
     "serve", "applications[1].name", "duplicate application name 'cascade'"),
    # ---- the Cascade config inside ------------------------------------------------------------
    ("cascade-config-invalid", RS,
     lambda d: _cascade(d, lambda c: c["pools"][0].update(min_replicas=9, max_replicas=8)),
     "cascade", "args.config", "pools[0]"),
    ("cascade-unknown-key", RS, lambda d: _cascade(d, lambda c: c.update(poolz=[])), "cascade",
     "args.config", "poolz"),
    ("pool-without-gpu-group", RS, lambda d: _wg(d).pop("resources"), "cascade",
     "workerGroupSpecs", "pool llm-h100 needs Ray resource 'accelerator_type:H100'"),
    # ---- PodMonitor (embedded schema) ---------------------------------------------------------
    ("podmonitor-unknown-field", PM,
     lambda d: _set(d["spec"]["podMetricsEndpoints"][0], "portt", "metrics"), "schema",
     "podMetricsEndpoints[0].portt", 'unknown field "portt"'),
    ("podmonitor-no-selector", PM, lambda d: d["spec"].pop("selector"), "schema", "spec",
     "Required value: 'selector'"),
    ("podmonitor-interval", PM,
     lambda d: _set(d["spec"]["podMetricsEndpoints"][0], "interval", "10 seconds"), "schema",
     "podMetricsEndpoints[0].interval", "does not match"),
    ("podmonitor-no-port", PM, lambda d: d["spec"]["podMetricsEndpoints"][0].pop("port"),
     "podmonitor", "podMetricsEndpoints[0]", "needs port or portNumber"),
    # ---- ConfigMap ---------------------------------------------------------------------------
    ("configmap-non-string", CM, lambda d: _set(d["data"], "n", 3), "schema", "data.n",
     "is not of type 'string'"),
    ("configmap-bad-key", CM, lambda d: _set(d["data"], "my notes", "x"), "configmap",
     "data.my notes", "must consist of alphanumerics"),
    ("configmap-bad-json", CM, lambda d: _set(d["data"], "cascade-overview.json", "{"),
     "configmap", "data.cascade-overview.json", "not valid JSON"),
    ("configmap-too-big", CM, lambda d: _set(d["data"], "big.txt", "x" * (1 << 20)),
     "configmap", "data", "ConfigMap too long"),
    ("configmap-bad-name", CM, lambda d: _set(d["metadata"], "name", "Cascade_Dashboard"),
     "metadata", "metadata.name", "DNS-1123 subdomain"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "index", "mutate", "source", "path", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_each_broken_manifest_fails_with_its_specific_error(
    rendered: list[Doc],
    case: str,
    index: int,
    mutate: Callable[[Doc], None],
    source: str,
    path: str,
    message: str,
) -> None:
    doc = copy.deepcopy(rendered[index])
    assert validate_document(doc, index, check_config=cascade_pools) == []
    mutate(doc)
    issues = validate_document(doc, index, check_config=cascade_pools)
    assert issues, f"{case}: accepted"
    shown = "\n".join(map(str, issues))
    # one error, or the same error once per worker group it applies to
    assert all(i.source == source and message in i.message for i in issues), shown
    assert any(path in i.path for i in issues), shown
    assert len(issues) == 1 or case == "idle-timeout-needs-v2", shown


def test_nulls_are_dropped_and_defaults_applied_as_the_api_server_does(
    rendered: list[Doc],
) -> None:
    doc = copy.deepcopy(rendered[RS])
    doc["spec"]["suspend"] = None  # `suspend:` with no value: dropped, not a type error
    _wg(doc)["numOfHosts"] = None
    assert validate_document(doc, check_config=cascade_pools) == []
    schema = crd_schemas(str(crd_dir()))[("ray.io/v1", "RayService")].structural
    obj = normalize(copy.deepcopy(doc), schema)
    assert "suspend" not in obj["spec"]
    wg = _wg(obj)
    assert wg["numOfHosts"] == 1  # CRD default
    assert all(p["protocol"] == "TCP" for p in _head_c(obj)["ports"])  # defaulted in items


def test_schema_translation_handles_the_kubernetes_extensions() -> None:
    structural = {
        "type": "object",
        "properties": {
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "strict": {"type": "object", "properties": {"a": {"type": "string"}}},
            "q": {"x-kubernetes-int-or-string": True},
            "maybe": {"type": "string", "nullable": True},
            "n": {"type": "integer", "default": 3},
            "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
        },
    }
    schema = to_jsonschema(structural)

    def errors(obj: Doc) -> list[tuple[str, str]]:
        return list(iter_schema_errors(normalize(obj, structural), schema))

    assert errors({"free": {"anything": {"goes": 1}}, "q": "1Gi", "maybe": None}) == []
    assert errors({"q": 2}) == []
    assert errors({"strict": {"b": 1}}) == [("strict.b", 'unknown field "b"')]
    assert errors({"q": 1.5}) == [("q", "1.5: must be an integer or a string")]
    assert errors({"tags": ["a", "a"]}) == [("tags", "duplicate value 'a' in a set")]
    assert errors({"oops": 1}) == [("oops", 'unknown field "oops"')]
    assert normalize({}, structural) == {"n": 3}


def test_unsupported_kinds_and_yaml_errors_are_reported(tmp_path: Path) -> None:
    (issue,) = validate_document({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}})
    assert issue.source == "document" and "unsupported apiVersion/kind apps/v1 Deployment" in str(
        issue
    )
    f = tmp_path / "bad.yaml"
    f.write_text("kind: RayService\n  spec: [\n")
    (issue,) = validate_file(f)
    assert issue.source == "yaml" and "invalid YAML" in issue.message and ":2:" in issue.message


def test_crd_directory_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASCADE_KUBERAY_CRDS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="CASCADE_KUBERAY_CRDS"):
        validate_document({"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {}})
    assert crd_dir() == tmp_path


def test_validate_cli_exit_status_and_messages(
    rendered: list[Doc], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump_all(rendered))
    broken = copy.deepcopy(rendered)
    _wg(broken[RS]).update(minReplicas=5, maxReplicas=2)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(broken))
    assert main(["k8s", "validate", str(good)]) == 0
    assert main(["k8s", "validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{good}: OK (1 RayService, 1 PodMonitor, 1 ConfigMap, 1 NetworkPolicy)" in out
    assert (
        f"{bad}: RayService/cascade-llama3-8b: spec.rayClusterConfig.workerGroupSpecs[0]"
        ".minReplicas: worker group llm-h100 has minReplicas 5 greater than maxReplicas 2 [kuberay]"
    ) in out


def test_issue_reads_as_one_line() -> None:
    i = Issue("RayService/x", "spec.a", "bad", "schema")
    assert str(i) == "RayService/x: spec.a: bad [schema]"
    assert json.dumps(str(Issue("f.yaml", "", "no documents", "document"))).count("\\n") == 0
