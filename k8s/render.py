"""Render Kubernetes manifests from the one Cascade config.

``render_manifests(spec, options)`` returns three documents for a ``ServiceSpec``
(plain data: ``orchestrator.k8s_cli.service_spec`` builds it from a Cascade config):

1. a KubeRay ``RayService`` (``ray.io/v1``): a head group (Ray dashboard, GCS,
   Serve's HTTP proxy, the Cascade controller actor and ingress; environment that
   embeds Grafana in the Ray dashboard) and one GPU worker group per Cascade pool.
   A worker pod holds one Serve replica: ``tp_size`` GPUs (``nvidia.com/gpu``),
   a node selector on the GPU product label, a toleration for the GPU taint, the
   Ray custom resource ``accelerator_type:<GPU>`` (so the Ray autoscaler knows
   which group to grow for a replica of that pool), and the pool's
   ``min_replicas``/``max_replicas``/``initial_replicas`` as the group's bounds,
   with the in-tree Ray autoscaler on. ``serveConfigV2`` runs
   ``orchestrator.app:build_app`` with the Cascade config inline as its
   ``config`` argument (``ServiceSpec.app_config``), so the cluster needs no
   config file or volume.
2. a Prometheus-operator ``PodMonitor`` scraping every Ray pod of this service
   (port ``metrics``, plus the head's autoscaler and dashboard metrics ports).
3. a ``ConfigMap`` holding the Grafana dashboard JSON, labelled for the Grafana
   sidecar of kube-prometheus-stack (``grafana_dashboard: "1"``).
4. a ``NetworkPolicy`` (``k8s.network``): the Ray pods' dashboard / Jobs API, GCS
   and client ports only from the cluster's own pods (and the dashboard from the
   KubeRay operator); Serve's port 8000 from anywhere, behind the Service KubeRay
   creates (ClusterIP). Nothing here exposes the dashboard beyond the cluster.

With ``auth`` in the Cascade config, every Ray container reads the ingress's API
token from the Secret it names (``valueFrom.secretKeyRef``); the token never
appears in the manifests.

``to_yaml(docs)`` prints them as one multi-document YAML stream. Everything is
pure (no Kubernetes client); ``k8s.validate`` checks the result offline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from k8s.network import (
    AUTOSCALER_METRICS_PORT,
    CLIENT_PORT,
    DASHBOARD_METRICS_PORT,
    DASHBOARD_PORT,
    GCS_PORT,
    METRICS_PORT,
    SERVE_PORT,
    render_networkpolicy,
)
from k8s.spec import PoolSpec, ServiceSpec

APP_IMPORT_PATH = "orchestrator.app:build_app"
APP_NAME = "cascade"
RAY_VERSION = "2.60.0"
DEFAULT_IMAGE = "cascade-serve:0.1.0"  # built from this repository (docs/deploy.md)
GPU_RESOURCE = "nvidia.com/gpu"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_POOL = "cascade.io/pool"


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (serveConfigV2, the dashboard JSON)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """Cluster-specific settings that are not part of the Cascade config.

    Hosts are URLs as seen from inside the cluster (``grafana_host``,
    ``prometheus_host``) and from the user's browser (``grafana_iframe_host``);
    the defaults are kube-prometheus-stack installed as release ``prometheus`` in
    namespace ``prometheus-system`` and Grafana port-forwarded to localhost:3000.
    """

    image: str = DEFAULT_IMAGE
    namespace: str | None = None
    ray_version: str = RAY_VERSION
    grafana_host: str = "http://prometheus-grafana.prometheus-system.svc:80"
    grafana_iframe_host: str = "http://127.0.0.1:3000"
    prometheus_host: str = "http://prometheus-kube-prometheus-prometheus.prometheus-system.svc:9090"
    prometheus_release: str = "prometheus"  # PodMonitor label the Prometheus selects
    head_cpu: str = "8"
    head_memory: str = "32Gi"
    cpus_per_gpu: int = 8
    memory_per_gpu_gi: int = 64
    gpu_toleration_key: str = GPU_RESOURCE
    hf_token_secret: str | None = "hf-token"  # Secret with key HF_TOKEN (optional in the pod)
    # NetworkPolicy sources besides the cluster's own pods (k8s.network)
    operator_namespace: str | None = None  # the KubeRay operator's (None: any namespace)
    prometheus_namespace: str | None = "prometheus-system"  # may scrape the metrics ports
    idle_timeout_s: int = 300  # seconds an idle GPU worker stays before the autoscaler drops it
    extra_env: Mapping[str, str] = field(default_factory=dict)


def _labels(spec: ServiceSpec, component: str, pool: str | None = None) -> dict[str, str]:
    out = {LABEL_NAME: "cascade", LABEL_INSTANCE: spec.name, LABEL_COMPONENT: component}
    if pool is not None:
        out[LABEL_POOL] = pool
    return out


def _meta(name: str, labels: Mapping[str, str], namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace:
        meta["namespace"] = namespace
    return meta


def dump_yaml(data: Any) -> str:
    """``data`` as block-style YAML (multi-line strings as ``|`` blocks)."""
    return _dump(data)


def serve_config(spec: ServiceSpec) -> dict[str, Any]:
    """Ray Serve's config file (the content of ``serveConfigV2``)."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": SERVE_PORT},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": APP_IMPORT_PATH,
                "args": {"config": spec.app_config},
            }
        ],
    }


def ray_dashboard_env(
    grafana_host: str,
    prometheus_host: str,
    *,
    grafana_iframe_host: str | None = None,
    prometheus_name: str = "Prometheus",
    grafana_org_id: str | None = None,
) -> dict[str, str]:
    """Head-node environment that embeds Grafana panels in the Ray dashboard.

    ``grafana_host``: Grafana as the head node reaches it (health checks);
    ``grafana_iframe_host``: Grafana as the user's browser reaches it (defaults to
    ``grafana_host``); ``prometheus_host``: Prometheus as the head reaches it;
    ``prometheus_name``: the Grafana data-source name Ray's dashboards use.
    Each URL needs its scheme (``http://``).
    """
    hosts = {
        "RAY_GRAFANA_HOST": grafana_host,
        "RAY_PROMETHEUS_HOST": prometheus_host,
        "RAY_GRAFANA_IFRAME_HOST": grafana_iframe_host or grafana_host,
    }
    for key, value in hosts.items():
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{key}={value!r}: must start with http:// or https://")
    env = dict(hosts)
    env["RAY_PROMETHEUS_NAME"] = prometheus_name
    if grafana_org_id is not None:
        env["RAY_GRAFANA_ORG_ID"] = grafana_org_id
    return env


def _env(pairs: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in pairs.items()]


def _secret_env(spec: ServiceSpec, options: RenderOptions) -> list[dict[str, Any]]:
    """Secrets as environment: ``HF_TOKEN`` (optional) and the ingress's API token
    (required: a pod without it never starts, rather than serving an open API).
    Every Ray container gets both, as the ingress may run on any node."""
    out = []
    if options.hf_token_secret:
        ref = {"name": options.hf_token_secret, "key": "HF_TOKEN", "optional": True}
        out.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}})
    token = spec.api_token
    if token is not None:
        ref = {"name": token.secret, "key": token.key}
        out.append({"name": token.env, "valueFrom": {"secretKeyRef": ref}})
    return out


def _head(spec: ServiceSpec, options: RenderOptions) -> dict[str, Any]:
    env = ray_dashboard_env(
        options.grafana_host,
        options.prometheus_host,
        grafana_iframe_host=options.grafana_iframe_host,
    )
    env.update(options.extra_env)
    ports = [
        ("gcs", GCS_PORT),
        ("dashboard", DASHBOARD_PORT),
        ("client", CLIENT_PORT),
        ("serve", SERVE_PORT),
        ("metrics", METRICS_PORT),
        ("as-metrics", AUTOSCALER_METRICS_PORT),
        ("dash-metrics", DASHBOARD_METRICS_PORT),
    ]
    resources = {"cpu": options.head_cpu, "memory": options.head_memory}
    return {
        # The head runs no GPU work: the controller actor, the ingress and Serve's proxy.
        "rayStartParams": {"dashboard-host": "0.0.0.0"},
        "template": {
            "metadata": {"labels": _labels(spec, "ray-head")},
            "spec": {
                "containers": [
                    {
                        "name": "ray-head",
                        "image": options.image,
                        "env": _env(env) + _secret_env(spec, options),
                        "ports": [{"name": n, "containerPort": p} for n, p in ports],
                        "resources": {"requests": dict(resources), "limits": dict(resources)},
                    }
                ]
            },
        },
    }


def _worker_group(spec: ServiceSpec, pool: PoolSpec, options: RenderOptions) -> dict[str, Any]:
    gpus = pool.tp_size
    resources = {
        "cpu": str(options.cpus_per_gpu * gpus),
        "memory": f"{options.memory_per_gpu_gi * gpus}Gi",
        GPU_RESOURCE: str(gpus),
    }
    pod_spec: dict[str, Any] = {
        "containers": [
            {
                "name": "ray-worker",
                "image": options.image,
                "env": _env(dict(options.extra_env)) + _secret_env(spec, options),
                "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
                "resources": {"requests": dict(resources), "limits": dict(resources)},
                # vLLM's workers share tensors through /dev/shm
                "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
            }
        ],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
        "tolerations": [
            {"key": options.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"}
        ],
    }
    if pool.node_selector:
        pod_spec["nodeSelector"] = dict(pool.node_selector)
    return {
        "groupName": pool.name,
        "replicas": pool.start_replicas,
        "minReplicas": pool.min_replicas,
        "maxReplicas": pool.max_replicas,
        "idleTimeoutSeconds": options.idle_timeout_s,
        # Advertised before any pod exists, so the autoscaler grows the right group
        # for a pending replica of this pool (Ray also detects it on the node).
        "resources": {f"accelerator_type:{pool.accelerator}": "1"},
        "rayStartParams": {},
        "template": {
            "metadata": {"labels": _labels(spec, "ray-worker", pool.name)},
            "spec": pod_spec,
        },
    }


def render_rayservice(spec: ServiceSpec, options: RenderOptions | None = None) -> dict[str, Any]:
    """The RayService for ``spec`` (see the module docstring)."""
    options = options or RenderOptions()
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _meta(spec.name, _labels(spec, "rayservice"), options.namespace),
        "spec": {
            "upgradeStrategy": {"type": "NewCluster"},
            "serveConfigV2": _dump(serve_config(spec)),
            "rayClusterConfig": {
                "rayVersion": options.ray_version,
                "enableInTreeAutoscaling": True,
                # v2: per-group idle timeouts; pods keep restartPolicy unset (v2 needs
                # Never or unset)
                "autoscalerOptions": {
                    "version": "v2",
                    "upscalingMode": "Default",
                    "idleTimeoutSeconds": options.idle_timeout_s,
                },
                "headGroupSpec": _head(spec, options),
                "workerGroupSpecs": [_worker_group(spec, p, options) for p in spec.pools],
            },
        },
    }


def render_podmonitor(spec: ServiceSpec, options: RenderOptions | None = None) -> dict[str, Any]:
    """A PodMonitor for every Ray pod of this service, created next to it."""
    options = options or RenderOptions()
    relabel = [
        {
            "action": "replace",
            "sourceLabels": ["__meta_kubernetes_pod_label_ray_io_cluster"],
            "targetLabel": "ray_io_cluster",
        }
    ]
    labels = _labels(spec, "metrics")
    labels["release"] = options.prometheus_release
    endpoints = [
        {"port": port, "path": "/metrics", "interval": "10s", "relabelings": relabel}
        for port in ("metrics", "as-metrics", "dash-metrics")  # the last two: head only
    ]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _meta(f"{spec.name}-ray", labels, options.namespace),
        "spec": {
            "jobLabel": LABEL_INSTANCE,
            "selector": {
                "matchLabels": {LABEL_NAME: "cascade", LABEL_INSTANCE: spec.name},
            },
            "podMetricsEndpoints": endpoints,
        },
    }


def render_dashboard_configmap(
    spec: ServiceSpec, options: RenderOptions | None = None
) -> dict[str, Any]:
    """The Grafana dashboard in a ConfigMap the Grafana sidecar loads."""
    options = options or RenderOptions()
    labels = _labels(spec, "dashboard")
    labels["grafana_dashboard"] = "1"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(f"{spec.name}-dashboard", labels, options.namespace),
        "data": {f"{spec.dashboard_uid}.json": spec.dashboard_json},
    }


def render_manifests(
    spec: ServiceSpec, options: RenderOptions | None = None
) -> list[dict[str, Any]]:
    """RayService, PodMonitor, dashboard ConfigMap, and the NetworkPolicy of the
    Ray pods (it applies to pods already running: its place in the list does not
    open a window)."""
    options = options or RenderOptions()
    return [
        render_rayservice(spec, options),
        render_podmonitor(spec, options),
        render_dashboard_configmap(spec, options),
        render_networkpolicy(
            spec.name,
            _labels(spec, "ray-head"),
            namespace=options.namespace,
            operator_namespace=options.operator_namespace,
            prometheus_namespace=options.prometheus_namespace,
        ),
    ]


def to_yaml(docs: Sequence[Mapping[str, Any]], header: str = "") -> str:
    """One multi-document YAML stream (``---`` between documents)."""
    body = yaml.dump_all(
        [json.loads(json.dumps(d)) for d in docs],
        Dumper=_Dumper,
        sort_keys=False,
        width=100,
        explicit_start=True,
        allow_unicode=True,
    )
    return header + body
