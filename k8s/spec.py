"""What the manifests are rendered from: plain data, no Cascade config object.

``k8s/`` takes plain data (the package rule): the CLI (``orchestrator.k8s_cli``)
builds a ``ServiceSpec`` from the Cascade config (the app's inline config text,
the Grafana dashboard JSON, one ``PoolSpec`` per pool) and hands it to
``k8s.render``. Validation gets the Cascade-config check the same way, as a
``ConfigCheck`` callable (``k8s.serve_rules``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """One Cascade pool = one GPU worker group (replica bounds; GPUs per replica)."""

    name: str
    accelerator: str
    tp_size: int
    min_replicas: int
    max_replicas: int
    start_replicas: int
    node_selector: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApiTokenSpec:
    """The ingress's bearer token: the environment variable the ingress reads
    (``auth.token_env``) and the Kubernetes Secret (name, key) it comes from."""

    env: str
    secret: str
    key: str = "token"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One Cascade service: its name, pools, the app's ``config`` argument (the
    Cascade config as YAML text, inlined in ``serveConfigV2``), the Grafana
    dashboard (uid and JSON text) for the dashboard ConfigMap, and the API token's
    Secret when the config turns ingress auth on."""

    name: str
    pools: tuple[PoolSpec, ...]
    app_config: str
    dashboard_uid: str
    dashboard_json: str
    api_token: ApiTokenSpec | None = None


# Parses a Cascade config (a mapping, as loaded from the app's inline YAML) and
# returns its pools as (name, accelerator); raises ValueError naming the key path
# when the config is invalid.
ConfigCheck = Callable[[Any], Sequence[tuple[str, str]]]
