"""The Ray pods' network exposure: their ports, and the NetworkPolicy we render.

Ray's head serves its dashboard and, on the same port, the Jobs API (8265: anyone
who reaches it can run code on the cluster), the GCS (6379) and the Ray client
(10001). None of them has authorization of its own in Ray 2.60 by default, so none
may be reachable from outside the cluster's own pods. Serve's HTTP proxy (8000) is
the one port users need; KubeRay puts it behind the ``<name>-serve-svc`` Service
(ClusterIP), and Cascade's ingress checks a bearer token when the config asks.

``render_networkpolicy`` selects every Ray pod of a service (head and workers) and
admits ingress only from:

* the service's own Ray pods, on every port (GCS, raylets, object managers and
  worker processes use many, some chosen at random);
* the KubeRay operator, on the dashboard port only (it deploys ``serveConfigV2``
  and reads Serve's status through the dashboard's REST API);
* anyone, on Serve's port 8000;
* Prometheus's namespace, on the metrics ports (the PodMonitor's scrapes).

A NetworkPolicy takes effect only where the cluster's CNI enforces it (Calico,
Cilium, ...): see docs/deploy.md, "Security".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GCS_PORT = 6379
DASHBOARD_PORT = 8265
CLIENT_PORT = 10001
SERVE_PORT = 8000
METRICS_PORT = 8080
# Ray's defaults for the head's autoscaler and dashboard metrics endpoints.
AUTOSCALER_METRICS_PORT = 44217
DASHBOARD_METRICS_PORT = 44227

# Ports nobody outside the cluster's pods may reach, and what each serves.
CONTROL_PORTS: dict[int, str] = {
    DASHBOARD_PORT: "dashboard and Jobs API",
    GCS_PORT: "GCS",
    CLIENT_PORT: "Ray client",
}
# Container port names KubeRay and Cascade give them.
CONTROL_PORT_NAMES: dict[str, int] = {
    "dashboard": DASHBOARD_PORT,
    "gcs": GCS_PORT,
    "gcs-server": GCS_PORT,
    "client": CLIENT_PORT,
}
OPERATOR_LABELS = {"app.kubernetes.io/name": "kuberay-operator"}
_NAMESPACE_LABEL = "kubernetes.io/metadata.name"  # set by Kubernetes on every namespace


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def _namespace(name: str | None) -> dict[str, Any]:
    return {"matchLabels": {_NAMESPACE_LABEL: name}} if name else {}


def render_networkpolicy(
    name: str,
    head_labels: Mapping[str, str],
    *,
    namespace: str | None = None,
    operator_namespace: str | None = None,
    prometheus_namespace: str | None = "prometheus-system",
) -> dict[str, Any]:
    """The NetworkPolicy of service ``name``'s Ray pods (see the module docstring).
    ``head_labels``: the head pod's labels; the policy selects the pods that share
    its ``app.kubernetes.io/name`` and ``app.kubernetes.io/instance`` (every Ray
    pod of this service). ``operator_namespace``: the KubeRay operator's namespace
    (``None``: its pods in any namespace); ``prometheus_namespace``: ``None`` lets
    no scraper in."""
    pods = {k: v for k, v in head_labels.items() if k.endswith(("/name", "/instance"))}
    ingress: list[dict[str, Any]] = [
        {"from": [{"podSelector": {"matchLabels": dict(pods)}}]},
        {
            "from": [
                {
                    "namespaceSelector": _namespace(operator_namespace),
                    "podSelector": {"matchLabels": dict(OPERATOR_LABELS)},
                }
            ],
            "ports": _tcp(DASHBOARD_PORT),
        },
        {"ports": _tcp(SERVE_PORT)},
    ]
    if prometheus_namespace:
        ingress.append(
            {
                "from": [{"namespaceSelector": _namespace(prometheus_namespace)}],
                "ports": _tcp(METRICS_PORT, AUTOSCALER_METRICS_PORT, DASHBOARD_METRICS_PORT),
            }
        )
    labels = dict(pods)
    labels["app.kubernetes.io/component"] = "network-policy"
    meta: dict[str, Any] = {"name": f"{name}-ray", "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {
            "podSelector": {"matchLabels": dict(pods)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def selects(selector: Any, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics: does ``selector`` (``matchLabels`` and
    ``matchExpressions``; ``{}`` selects everything) select ``labels``?"""
    if not isinstance(selector, Mapping):
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key"), expr.get("operator")
        values = set(expr.get("values") or [])
        have = key in labels
        if op == "In" and not (have and labels[key] in values):
            return False
        if op == "NotIn" and have and labels[key] in values:
            return False
        if op == "Exists" and not have:
            return False
        if op == "DoesNotExist" and have:
            return False
    return True
