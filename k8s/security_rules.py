"""Security checks: nothing exposes the Ray head's control ports beyond the
cluster, a NetworkPolicy guards them, and the API token comes from a Secret.

The head's dashboard (8265, which also serves the Jobs API: whoever reaches it can
run code on the cluster), GCS (6379) and Ray client (10001) ports (``k8s.network``)
must be reachable only from the cluster's own pods:

* ``exposure_problems`` (RayService / RayCluster): the head service stays
  ClusterIP (``serviceType``, ``headService.spec.type``, no ``externalIPs``), no
  KubeRay-made Ingress (``enableIngress``), no ``hostNetwork`` or ``hostPort`` for
  those ports on the head, and a RayService's ``serveService`` carries none of them;
* ``service_problems`` / ``ingress_problems``: a NodePort / LoadBalancer Service or
  an Ingress in the same manifests does not route to them;
* ``token_problems`` (RayService): when the Cascade config in ``serveConfigV2``
  sets ``auth.token_env``, every Ray container takes that variable from a Secret
  (``valueFrom.secretKeyRef``): missing, the ingress would refuse to start; a
  literal ``value`` would put the token in the manifest;
* ``networkpolicy_problems`` (across the documents of one file): each Ray head is
  selected by a NetworkPolicy of its namespace (or KubeRay's own
  ``networkPolicy`` with mode ``DenyAll`` / ``DenyAllIngress``), and no rule lets
  a source other than the cluster's own pods reach those ports (the KubeRay
  operator may reach the dashboard: it deploys Serve's config through it).

Each check returns ``(path, message)`` pairs (the last: ``(document index, path,
message)``); an empty list means it passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from k8s.network import CONTROL_PORT_NAMES, CONTROL_PORTS, DASHBOARD_PORT, OPERATOR_LABELS, selects
from k8s.rules import Problems

_EXTERNAL_TYPES = ("NodePort", "LoadBalancer")
_PORTS_TEXT = ", ".join(f"{what} ({port})" for port, what in CONTROL_PORTS.items())


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def _cluster(doc: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """A RayService's or RayCluster's cluster spec and its path."""
    if doc.get("kind") == "RayService":
        return _get(doc, "spec", "rayClusterConfig") or {}, "spec.rayClusterConfig"
    return doc.get("spec") or {}, "spec"


def _containers(group: Any) -> list[Mapping[str, Any]]:
    return [
        c for c in _get(group, "template", "spec", "containers") or [] if isinstance(c, Mapping)
    ]


def _is_control(port: Any) -> bool:
    return port in CONTROL_PORTS or (isinstance(port, str) and port in CONTROL_PORT_NAMES)


def _service_spec_problems(spec: Any, where: str, what: str) -> Problems:
    """A Service spec that routes a control port, and is reachable from outside."""
    if not isinstance(spec, Mapping):
        return []
    external = spec.get("type") in _EXTERNAL_TYPES or bool(spec.get("externalIPs"))
    out: Problems = []
    for i, port in enumerate(spec.get("ports") or []):
        hits = [p for p in (port.get("port"), port.get("targetPort")) if _is_control(p)]
        if hits and external:
            out.append(
                (
                    f"{where}.ports[{i}]",
                    f"{what} ({spec.get('type') or 'externalIPs'}) "
                    f"exposes the Ray head's port {hits[0]} beyond the cluster: the "
                    f"{_PORTS_TEXT} ports must stay inside it (kubectl port-forward)",
                )
            )
    return out


def exposure_problems(doc: Mapping[str, Any]) -> Problems:
    """A RayService's or RayCluster's own ways of exposing the head's control ports."""
    cluster, where = _cluster(doc)
    head = cluster.get("headGroupSpec") or {}
    h = f"{where}.headGroupSpec"
    out: Problems = []
    if head.get("serviceType") in _EXTERNAL_TYPES:
        out.append(
            (
                f"{h}.serviceType",
                f"serviceType {head['serviceType']} exposes the Ray "
                f"head's {_PORTS_TEXT} ports beyond the cluster: leave it ClusterIP "
                "(reach the dashboard with kubectl port-forward)",
            )
        )
    out += _service_spec_problems(
        _get(head, "headService", "spec"), f"{h}.headService.spec", "the head service"
    )
    svc = _get(head, "headService", "spec") or {}
    if svc.get("type") in _EXTERNAL_TYPES and not svc.get("ports"):
        out.append(
            (
                f"{h}.headService.spec.type",
                f"a {svc['type']} head service exposes the "
                f"Ray head's {_PORTS_TEXT} ports beyond the cluster",
            )
        )
    if head.get("enableIngress"):
        out.append(
            (
                f"{h}.enableIngress",
                "enableIngress exposes the Ray dashboard and its Jobs "
                "API through an Ingress: anyone who reaches it can run code on the cluster",
            )
        )
    if _get(head, "template", "spec", "hostNetwork"):
        out.append(
            (
                f"{h}.template.spec.hostNetwork",
                f"hostNetwork puts the Ray head's {_PORTS_TEXT} ports on the node's own network",
            )
        )
    for c, container in enumerate(_containers(head)):
        for p, port in enumerate(container.get("ports") or []):
            if port.get("hostPort") and _is_control(port.get("containerPort")):
                out.append(
                    (
                        f"{h}.template.spec.containers[{c}].ports[{p}].hostPort",
                        f"hostPort publishes the Ray head's port {port['containerPort']} "
                        "on the node's address",
                    )
                )
    if doc.get("kind") == "RayService":
        out += _service_spec_problems(
            _get(doc, "spec", "serveService", "spec"), "spec.serveService.spec", "the Serve service"
        )
    return out


def service_problems(doc: Mapping[str, Any]) -> Problems:
    """A Service that makes a control port reachable from outside the cluster."""
    return _service_spec_problems(doc.get("spec"), "spec", "the Service")


def ingress_problems(doc: Mapping[str, Any]) -> Problems:
    """An Ingress that routes to a control port (by number or by name)."""
    backends: list[tuple[str, Any]] = [("spec.defaultBackend", _get(doc, "spec", "defaultBackend"))]
    for r, rule in enumerate(_get(doc, "spec", "rules") or []):
        for p, path in enumerate(_get(rule, "http", "paths") or []):
            backends.append((f"spec.rules[{r}].http.paths[{p}].backend", path.get("backend")))
    out: Problems = []
    for where, backend in backends:
        port = _get(backend, "service", "port") or {}
        hit = port.get("number") if port.get("number") in CONTROL_PORTS else port.get("name")
        if _is_control(hit):
            out.append(
                (
                    f"{where}.service.port",
                    f"routes to the Ray head's port {hit} "
                    f"({_PORTS_TEXT}): anyone who reaches the Ingress could use it; "
                    "an Ingress may route to Serve (8000) only",
                )
            )
    return out


def _token_envs(doc: Mapping[str, Any]) -> set[str]:
    """``auth.token_env`` of each Cascade config inline in ``serveConfigV2``."""
    try:
        serve = yaml.safe_load(_get(doc, "spec", "serveConfigV2") or "")
    except yaml.YAMLError:
        return set()  # reported by the Serve checks
    out = set()
    for app in _get(serve, "applications") or []:
        config = _get(app, "args", "config")
        if isinstance(config, str):
            try:
                config = yaml.safe_load(config)
            except yaml.YAMLError:
                continue
        env = _get(config, "auth", "token_env")
        if isinstance(env, str) and env:
            out.add(env)
    return out


def token_problems(doc: Mapping[str, Any]) -> Problems:
    """Every Ray container takes the API token's variable from a Secret."""
    envs = _token_envs(doc)
    if not envs:
        return []
    cluster, where = _cluster(doc)
    groups = [(f"{where}.headGroupSpec", cluster.get("headGroupSpec"))]
    groups += [
        (f"{where}.workerGroupSpecs[{i}]", g)
        for i, g in enumerate(cluster.get("workerGroupSpecs") or [])
    ]
    out: Problems = []
    for path, group in groups:
        for c, container in enumerate(_containers(group)):
            at = f"{path}.template.spec.containers[{c}].env"
            found = {e.get("name"): e for e in container.get("env") or [] if isinstance(e, Mapping)}
            for env in sorted(envs):
                item = found.get(env)
                if item is None:
                    out.append(
                        (
                            at,
                            f"the Cascade config sets auth.token_env {env} but this "
                            f"container has no {env}: the ingress would refuse to start "
                            "here; take it from a Secret (valueFrom.secretKeyRef)",
                        )
                    )
                elif _get(item, "valueFrom", "secretKeyRef") is None:
                    out.append(
                        (
                            at,
                            f"{env} (the ingress's API token) must come from a Secret "
                            "(valueFrom.secretKeyRef), not be written in the manifest",
                        )
                    )
    return out


# ---- NetworkPolicy, across the documents ----------------------------------------------------
def _ports(entries: Any, named: Mapping[str, int]) -> set[int] | None:
    """The TCP ports a rule's ``ports`` list admits; ``None``: every port."""
    if not entries:
        return None
    out: set[int] = set()
    for entry in entries:
        if str(entry.get("protocol") or "TCP").upper() != "TCP":
            continue
        port = entry.get("port")
        if port is None:
            return None
        if isinstance(port, str):
            number = named.get(port, CONTROL_PORT_NAMES.get(port))
            out |= {number} if number is not None else set()
        else:
            end = entry.get("endPort") or port
            out |= {p for p in CONTROL_PORTS if port <= p <= end}
    return out


def _internal(peer: Mapping[str, Any], head_labels: Mapping[str, str]) -> bool:
    """A peer that stands for the cluster's own pods (same namespace)."""
    if peer.get("ipBlock") is not None or peer.get("namespaceSelector") is not None:
        return False
    match = _get(peer, "podSelector", "matchLabels") or {}
    own = all(head_labels.get(k) == v for k, v in match.items())
    return bool(match) and (own or "ray.io/cluster" in match)


def _who(peer: Mapping[str, Any] | None) -> str:
    if peer is None:
        return "every source"
    if peer.get("ipBlock") is not None:
        return f"addresses {_get(peer, 'ipBlock', 'cidr')}"
    if peer.get("namespaceSelector") is not None:
        return "pods of other namespaces"
    return "pods that are not the Ray cluster's"


def _leaks(rule: Any, named: Mapping[str, int], labels: Mapping[str, str]) -> list[str]:
    ports = _ports(rule.get("ports") if isinstance(rule, Mapping) else None, named)
    exposed = [p for p in CONTROL_PORTS if ports is None or p in ports]
    peers = (rule.get("from") if isinstance(rule, Mapping) else None) or [None]
    out = []
    for port in exposed:
        for peer in peers:
            if peer is not None and _internal(peer, labels):
                continue
            operator = all(
                _get(peer, "podSelector", "matchLabels", k) == v for k, v in OPERATOR_LABELS.items()
            )
            if peer is not None and port == DASHBOARD_PORT and operator:
                continue  # the KubeRay operator deploys Serve's config through the dashboard
            out.append(
                f"lets {_who(peer)} reach the Ray head's {CONTROL_PORTS[port]} port "
                f"{port}: only the cluster's own pods may (and the KubeRay operator, "
                "the dashboard)"
            )
    return sorted(set(out))


def _ingress_policy(doc: Mapping[str, Any]) -> bool:
    spec = doc.get("spec") or {}
    types = spec.get("policyTypes") or ["Ingress"]
    return "Ingress" in types


def networkpolicy_problems(docs: Sequence[Any]) -> list[tuple[int, str, str]]:
    """Each Ray head in ``docs`` is guarded by a NetworkPolicy of ``docs`` (see the
    module docstring): ``(document index, path, message)`` per problem."""
    policies = [
        (k, d)
        for k, d in enumerate(docs)
        if isinstance(d, Mapping) and d.get("kind") == "NetworkPolicy"
    ]
    out: list[tuple[int, str, str]] = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, Mapping) or doc.get("kind") not in ("RayService", "RayCluster"):
            continue
        cluster, where = _cluster(doc)
        head = cluster.get("headGroupSpec") or {}
        labels = _get(head, "template", "metadata", "labels") or {}
        named = {
            str(p.get("name")): p.get("containerPort")
            for c in _containers(head)
            for p in c.get("ports") or []
            if p.get("name")
        }
        kuberay = cluster.get("networkPolicy") or {}
        if kuberay.get("mode") in ("DenyAll", "DenyAllIngress"):
            for j, rule in enumerate(_get(kuberay, "head", "ingressRules") or []):
                at = f"{where}.networkPolicy.head.ingressRules[{j}]"
                out += [(i, at, m) for m in _leaks(rule, named, labels)]
            continue
        ns = _get(doc, "metadata", "namespace")
        mine = [
            (k, p)
            for k, p in policies
            if _get(p, "metadata", "namespace") == ns
            and _ingress_policy(p)
            and selects(_get(p, "spec", "podSelector"), labels)
        ]
        if not mine:
            out.append(
                (
                    i,
                    f"{where}.headGroupSpec",
                    "no NetworkPolicy in these manifests selects "
                    f"the Ray head pod (labels {dict(labels)}): its {_PORTS_TEXT} ports are "
                    "open to every pod of the Kubernetes cluster; add one (cascade k8s "
                    "render does) or set networkPolicy.mode DenyAllIngress",
                )
            )
        for k, policy in mine:
            for j, rule in enumerate(_get(policy, "spec", "ingress") or []):
                out += [(k, f"spec.ingress[{j}]", m) for m in _leaks(rule, named, labels)]
    return sorted(set(out))
