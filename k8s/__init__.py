"""KubeRay manifests rendered from the one Cascade config, and their offline validation.

``render_manifests(spec, RenderOptions(...))`` -> RayService, PodMonitor, the
Grafana dashboard ConfigMap and the Ray pods' NetworkPolicy for a ``ServiceSpec``
(plain data; the CLI builds it from a Cascade config); ``to_yaml`` prints them as
one stream. ``validate_documents`` / ``validate_file`` check manifests against
the KubeRay v1.7.0 CRDs (defaults applied, nulls dropped, unknown fields
rejected), the operator's own rules and Cascade's checks, security included
(nothing exposes the Ray dashboard / Jobs API beyond the cluster:
``k8s.security_rules``). ``k8s/manifests/`` holds the rendered example
(``examples/cluster.yaml``); the CLI is ``cascade k8s``.

This package imports no Kubernetes client, no Ray, and nothing of Cascade's other
packages: it takes plain data.
"""

from k8s.render import RenderOptions, render_manifests, to_yaml
from k8s.spec import PoolSpec, ServiceSpec
from k8s.validate import Issue, validate_documents, validate_file

__all__ = [
    "Issue",
    "PoolSpec",
    "RenderOptions",
    "ServiceSpec",
    "render_manifests",
    "to_yaml",
    "validate_documents",
    "validate_file",
]
