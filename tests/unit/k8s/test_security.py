"""Security rules of ``cascade k8s validate`` (``k8s.security_rules``): nothing
exposes the Ray head's dashboard / Jobs API, GCS or client port beyond the
cluster, a NetworkPolicy guards them, the API token comes from a Secret.

Each bad case is the rendered set with one thing changed, and must fail with its
own error (source ``security``, path, message); each good case must stay clean.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s.network import selects
from k8s.render import RenderOptions, render_manifests
from k8s.validate import validate_documents
from orchestrator.cli import main
from orchestrator.config import EXAMPLES_DIR, load_config
from orchestrator.k8s_cli import cascade_pools, service_spec

Doc = dict[str, Any]
Docs = list[Doc]
RS, NP = 0, 3


@pytest.fixture(scope="module")
def rendered() -> Docs:
    return render_manifests(service_spec(load_config(EXAMPLES_DIR / "cluster.yaml")))


def _head(d: Docs) -> Doc:
    return d[RS]["spec"]["rayClusterConfig"]["headGroupSpec"]  # type: ignore[no-any-return]


def _container(d: Docs, group: str = "head") -> Doc:
    g = _head(d) if group == "head" else d[RS]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    return g["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def _rule(d: Docs, rule: Doc) -> None:
    d[NP]["spec"]["ingress"].append(rule)


def _service(kind: str, port: Any, target: Any = None) -> Doc:
    p: Doc = {"name": "p", "port": port}
    if target is not None:
        p["targetPort"] = target
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "ray-extra"},
        "spec": {"type": kind, "selector": {"ray.io/node-type": "head"}, "ports": [p]},
    }


def _ingress(port: Doc) -> Doc:
    backend = {"service": {"name": "cascade-llama3-8b-head-svc", "port": port}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "ray"},
        "spec": {"rules": [{"host": "ray.example.com", "http": {"paths": [path]}}]},
    }


def _env(d: Docs, group: str, name: str, item: Doc | None) -> None:
    c = _container(d, group)
    c["env"] = [e for e in c["env"] if e["name"] != name] + ([item] if item else [])


def _kuberay_policy(d: Docs, rules: list[Doc]) -> None:
    d.pop(NP)
    d[RS]["spec"]["rayClusterConfig"]["networkPolicy"] = {
        "mode": "DenyAllIngress",
        "head": {"ingressRules": rules},
    }


ANYWHERE_8265 = {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 8265}]}

# (id, mutation, path fragment, message fragment, number of issues)
BAD: list[tuple[str, Callable[[Docs], None], str, str, int]] = [
    # ---- the RayService's own ways of exposing the head -------------------------------------
    ("head-loadbalancer", lambda d: _head(d).update(serviceType="LoadBalancer"),
     "headGroupSpec.serviceType", "serviceType LoadBalancer exposes the Ray head's", 1),
    ("head-service-nodeport", lambda d: _head(d).update(headService={"spec": {
        "type": "NodePort", "ports": [{"name": "dashboard", "port": 8265}]}}),
     "headService.spec.ports[0]", "exposes the Ray head's port 8265 beyond the cluster", 1),
    ("head-service-lb-default-ports", lambda d: _head(d).update(headService={"spec": {
        "type": "LoadBalancer"}}), "headService.spec.type", "a LoadBalancer head service", 1),
    ("enable-ingress", lambda d: _head(d).update(enableIngress=True), "headGroupSpec.enableIngress",
     "exposes the Ray dashboard and its Jobs API through an Ingress", 1),
    ("host-network", lambda d: _head(d)["template"]["spec"].update(hostNetwork=True),
     "hostNetwork", "on the node's own network", 1),
    ("host-port", lambda d: _container(d)["ports"][1].update(hostPort=8265),
     "containers[0].ports[1].hostPort", "publishes the Ray head's port 8265", 1),
    ("serve-service-with-dashboard", lambda d: d[RS]["spec"].update(serveService={"spec": {
        "type": "LoadBalancer", "ports": [{"port": 8000}, {"port": 8265}]}}),
     "serveService.spec.ports[1]", "port 8265 beyond the cluster", 1),
    # ---- the API token -------------------------------------------------------------------------
    ("token-missing-in-a-worker", lambda d: _env(d, "worker", "CASCADE_API_TOKEN", None),
     "workerGroupSpecs[0].template.spec.containers[0].env",
     "sets auth.token_env CASCADE_API_TOKEN but this container has no CASCADE_API_TOKEN", 1),
    ("token-written-in-the-manifest",
     lambda d: _env(d, "head", "CASCADE_API_TOKEN", {"name": "CASCADE_API_TOKEN", "value": "t"}),
     "headGroupSpec.template.spec.containers[0].env", "must come from a Secret", 1),
    # ---- other objects in the same manifests ----------------------------------------------
    ("service-lb-dashboard", lambda d: d.append(_service("LoadBalancer", 80, 8265)),
     "spec.ports[0]", "exposes the Ray head's port 8265", 1),
    ("service-nodeport-gcs-by-name", lambda d: d.append(_service("NodePort", 6379, "gcs")),
     "spec.ports[0]", "exposes the Ray head's port 6379", 1),
    ("ingress-to-dashboard", lambda d: d.append(_ingress({"number": 8265})),
     "spec.rules[0].http.paths[0].backend.service.port", "routes to the Ray head's port 8265", 1),
    ("ingress-to-dashboard-by-name", lambda d: d.append(_ingress({"name": "dashboard"})),
     "backend.service.port", "routes to the Ray head's port dashboard", 1),
    # ---- the NetworkPolicy ---------------------------------------------------------------------
    ("no-policy", lambda d: d.pop(NP), "headGroupSpec",
     "no NetworkPolicy in these manifests selects the Ray head pod", 1),
    ("policy-in-another-namespace", lambda d: d[NP]["metadata"].update(namespace="other"),
     "headGroupSpec", "no NetworkPolicy in these manifests selects", 1),
    ("policy-for-egress-only", lambda d: d[NP]["spec"].update(policyTypes=["Egress"]),
     "headGroupSpec", "no NetworkPolicy in these manifests selects", 1),
    ("policy-selects-other-pods",
     lambda d: d[NP]["spec"].update(podSelector={"matchLabels": {"app": "web"}}),
     "headGroupSpec", "no NetworkPolicy in these manifests selects", 1),
    ("allow-all-rule", lambda d: _rule(d, {}), "spec.ingress[4]", "lets every source reach", 3),
    ("dashboard-from-anywhere", lambda d: _rule(d, ANYWHERE_8265), "spec.ingress[4]",
     "lets addresses 0.0.0.0/0 reach the Ray head's dashboard and Jobs API port 8265", 1),
    ("gcs-by-name-from-other-namespaces",
     lambda d: _rule(d, {"from": [{"namespaceSelector": {}}], "ports": [{"port": "gcs"}]}),
     "spec.ingress[4]", "lets pods of other namespaces reach the Ray head's GCS port 6379", 1),
    ("client-from-every-pod-of-the-namespace",
     lambda d: _rule(d, {"from": [{"podSelector": {}}], "ports": [{"port": 10001}]}),
     "spec.ingress[4]", "lets pods that are not the Ray cluster's reach the Ray head's Ray client",
     1),
    ("port-range-over-gcs", lambda d: _rule(d, {"ports": [{"port": 6000, "endPort": 7000}]}),
     "spec.ingress[4]", "lets every source reach the Ray head's GCS port 6379", 1),
    ("operator-peer-on-gcs", lambda d: d[NP]["spec"]["ingress"][1]["ports"].append({"port": 6379}),
     "spec.ingress[1]", "lets pods of other namespaces reach the Ray head's GCS port 6379", 1),
    ("kuberay-policy-opening-the-dashboard", lambda d: _kuberay_policy(d, [ANYWHERE_8265]),
     "networkPolicy.head.ingressRules[0]", "lets addresses 0.0.0.0/0 reach", 1),
]  # fmt: skip

GOOD: list[tuple[str, Callable[[Docs], None]]] = [
    ("as-rendered", lambda d: None),
    ("serve-behind-a-loadbalancer", lambda d: d[RS]["spec"].update(serveService={"spec": {
        "type": "LoadBalancer", "ports": [{"name": "serve", "port": 8000}]}})),
    ("clusterip-service-on-the-dashboard", lambda d: d.append(_service("ClusterIP", 8265))),
    ("loadbalancer-on-serve", lambda d: d.append(_service("LoadBalancer", 80, 8000))),
    ("ingress-to-serve", lambda d: d.append(_ingress({"number": 8000}))),
    ("udp-rule", lambda d: _rule(d, {"ports": [{"protocol": "UDP", "port": 8265}]})),
    ("rule-from-the-ray-cluster-label",
     lambda d: _rule(d, {"from": [{"podSelector": {"matchLabels": {"ray.io/cluster": "c"}}}]})),
    ("kuberay-deny-all-ingress", lambda d: _kuberay_policy(d, [])),
    ("kuberay-rules-from-cluster-pods", lambda d: _kuberay_policy(d, [{"from": [{"podSelector": {
        "matchLabels": {"app.kubernetes.io/instance": "cascade-llama3-8b"}}}]}])),
]  # fmt: skip


def _issues(docs: Docs) -> list[Any]:
    return validate_documents(docs, check_config=cascade_pools)


@pytest.mark.parametrize(("case", "mutate", "path", "message", "n"), BAD, ids=[c[0] for c in BAD])
def test_each_exposure_fails_with_its_own_error(
    rendered: Docs, case: str, mutate: Callable[[Docs], None], path: str, message: str, n: int
) -> None:
    docs = copy.deepcopy(rendered)
    mutate(docs)
    issues = _issues(docs)
    shown = "\n".join(map(str, issues))
    assert len(issues) == n, shown
    assert all(i.source == "security" for i in issues), shown
    assert any(path in i.path and message in i.message for i in issues), shown


@pytest.mark.parametrize(("case", "mutate"), GOOD, ids=[c[0] for c in GOOD])
def test_what_stays_inside_the_cluster_passes(
    rendered: Docs, case: str, mutate: Callable[[Docs], None]
) -> None:
    docs = copy.deepcopy(rendered)
    mutate(docs)
    assert _issues(docs) == []


def test_the_rendered_policy_admits_what_the_service_needs(rendered: Docs) -> None:
    policy = rendered[NP]
    head = _head(rendered)["template"]["metadata"]["labels"]
    assert selects(policy["spec"]["podSelector"], head)
    rules = policy["spec"]["ingress"]
    ports = {r["ports"][0]["port"]: r.get("from") for r in rules if "ports" in r}
    assert ports[8000] is None  # Serve: from anywhere (the bearer token guards it)
    (operator,) = ports[8265]
    assert operator["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}
    cluster_pods = [r for r in rules if "ports" not in r]  # every port, the cluster's own pods
    assert [r["from"][0]["podSelector"]["matchLabels"] for r in cluster_pods] == [
        {"app.kubernetes.io/name": "cascade", "app.kubernetes.io/instance": "cascade-llama3-8b"}
    ]
    narrowed = render_manifests(
        service_spec(load_config(EXAMPLES_DIR / "cluster.yaml")),
        RenderOptions(operator_namespace="kuberay", prometheus_namespace=None),
    )[NP]
    ns = narrowed["spec"]["ingress"][1]["from"][0]["namespaceSelector"]
    assert ns == {"matchLabels": {"kubernetes.io/metadata.name": "kuberay"}}
    assert len(narrowed["spec"]["ingress"]) == 3  # no scraper rule
    assert _issues([rendered[RS], narrowed]) == []


def test_the_token_comes_from_the_secret_the_config_names(rendered: Docs) -> None:
    groups = [_head(rendered)] + rendered[RS]["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    for group in groups:
        env = {e["name"]: e for e in group["template"]["spec"]["containers"][0]["env"]}
        ref = env["CASCADE_API_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "cascade-api-token", "key": "token"}  # required, not optional
    text = yaml.safe_dump_all(rendered)
    assert "CASCADE_API_TOKEN" in text and "value: t" not in text
    plain = render_manifests(service_spec(load_config(EXAMPLES_DIR / "default.yaml")))
    assert "secretKeyRef" in yaml.safe_dump(plain[RS])  # HF_TOKEN only
    env = _head(plain)["template"]["spec"]["containers"][0]["env"]
    assert all(e["name"] != "CASCADE_API_TOKEN" for e in env)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "2"}}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "3"]}]}, {"a": "1"},
         True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"},
         False),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}, True),
        (None, {"a": "1"}, False),
    ],
)  # fmt: skip
def test_label_selectors(selector: Any, labels: dict[str, str], expected: bool) -> None:
    assert selects(selector, labels) is expected


def test_new_kinds_get_their_schema(rendered: Docs) -> None:
    policy = copy.deepcopy(rendered[NP])
    policy["spec"]["podSelectr"] = {}
    bad_service = _service("LoadBalancer", 8000)
    bad_service["spec"]["ports"][0]["port"] = "eight thousand"
    ingress = _ingress({"number": 8000})
    ingress["spec"]["rules"][0]["http"]["paths"][0].pop("pathType")
    issues = _issues([rendered[RS], policy, bad_service, ingress])
    shown = "\n".join(map(str, issues))
    assert {i.source for i in issues} == {"schema"}, shown
    assert any('unknown field "podSelectr"' in i.message for i in issues), shown
    assert any("ports[0].port" in i.path for i in issues), shown
    assert any("pathType" in i.message for i in issues), shown


def test_validate_cli_fails_a_manifest_that_exposes_the_dashboard(
    rendered: Docs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = copy.deepcopy(rendered)
    _head(docs).update(serviceType="LoadBalancer")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(docs))
    assert main(["k8s", "validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert (
        "RayService/cascade-llama3-8b: spec.rayClusterConfig.headGroupSpec.serviceType: "
        "serviceType LoadBalancer exposes the Ray head's"
    ) in out
    assert out.rstrip().endswith("[security]")
