"""Checks beyond the OpenAPI schemas, for any object: names, labels, annotations;
and the shapes of the non-KubeRay objects we render (ConfigMap, PodMonitor).

The KubeRay operator's own rules are ``k8s.kuberay_rules``; Serve's config and the
Cascade config in it, ``k8s.serve_rules``. Each check returns ``(path, message)``
pairs; an empty list means it passed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

CONFIGMAP_MAX_BYTES = 1024 * 1024

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

Problems = list[tuple[str, str]]


def dns1035_problems(name: str, what: str, max_len: int) -> Problems:
    out: Problems = []
    if len(name) > max_len:
        out.append(("metadata.name", f"{what} name should be no more than {max_len} characters"))
    if len(name) > 63 or not _DNS1035.match(name):
        out.append(
            (
                "metadata.name",
                f"{what} name should be a valid DNS1035 label: {name!r} must consist of lower "
                "case alphanumeric characters or '-', start with an alphabetic character, and "
                "end with an alphanumeric character",
            )
        )
    return out


def qualified_name_problems(key: str) -> list[str]:
    """Kubernetes' IsQualifiedName (label and annotation keys)."""
    prefix, _, name = key.rpartition("/")
    out = []
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        out.append(f"prefix part of {key!r} must be a DNS-1123 subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        out.append(
            f"name part of {key!r} must be 1-63 alphanumeric characters, '-', '_' or '.', "
            "starting and ending with an alphanumeric character"
        )
    return out


def label_value_problems(value: str) -> list[str]:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return [
            f"label value {value!r} must be at most 63 alphanumeric characters, '-', '_' or "
            "'.', starting and ending with an alphanumeric character"
        ]
    return []


def metadata_problems(meta: Mapping[str, Any], *, name_rule: str = "subdomain") -> Problems:
    """Name, namespace, labels and annotation keys of any object."""
    out: Problems = []
    name = meta.get("name")
    if not name and not meta.get("generateName"):
        out.append(("metadata.name", "Required value: name or generateName is required"))
    elif (
        isinstance(name, str)
        and name_rule == "subdomain"
        and (len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name))
    ):
        out.append(("metadata.name", f"{name!r} must be a DNS-1123 subdomain"))
    ns = meta.get("namespace")
    if isinstance(ns, str) and (len(ns) > 63 or not _DNS1123_LABEL.match(ns)):
        out.append(("metadata.namespace", f"{ns!r} must be a DNS-1123 label"))
    for key, value in (meta.get("labels") or {}).items():
        for msg in qualified_name_problems(str(key)):
            out.append((f"metadata.labels.{key}", msg))
        if isinstance(value, str):
            for msg in label_value_problems(value):
                out.append((f"metadata.labels.{key}", msg))
    for key in meta.get("annotations") or {}:
        for msg in qualified_name_problems(str(key)):
            out.append((f"metadata.annotations.{key}", msg))
    return out


# ---- ConfigMap and PodMonitor -------------------------------------------------------------------
def configmap_problems(doc: Mapping[str, Any]) -> Problems:
    out: Problems = []
    data = doc.get("data") or {}
    binary = doc.get("binaryData") or {}
    size = 0
    for section, items in (("data", data), ("binaryData", binary)):
        for key, value in items.items():
            if len(key) > 253 or not _CONFIGMAP_KEY.match(key):
                out.append(
                    (
                        f"{section}.{key}",
                        f"key {key!r} must consist of alphanumerics, '-', '_' or '.'",
                    )
                )
            size += len(str(key).encode()) + len(str(value).encode())
    for key in set(data) & set(binary):
        out.append((f"binaryData.{key}", f"key {key!r} is in both data and binaryData"))
    if size > CONFIGMAP_MAX_BYTES:
        out.append(("data", f"ConfigMap too long: {size} bytes > {CONFIGMAP_MAX_BYTES}"))
    dashboard = ((doc.get("metadata") or {}).get("labels") or {}).get("grafana_dashboard")
    for key, value in data.items():
        if not key.endswith(".json"):
            continue
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            out.append((f"data.{key}", f"not valid JSON: {exc}"))
            continue
        if dashboard is not None:
            missing = [k for k in ("uid", "title", "panels") if k not in parsed]
            if missing:
                out.append((f"data.{key}", f"a Grafana dashboard needs {missing}"))
    if dashboard is not None and not any(k.endswith(".json") for k in data):
        out.append(("data", "labelled grafana_dashboard but holds no .json dashboard"))
    return out


def podmonitor_problems(doc: Mapping[str, Any]) -> Problems:
    out: Problems = []
    for i, ep in enumerate((doc.get("spec") or {}).get("podMetricsEndpoints") or []):
        if not ep.get("port") and ep.get("portNumber") is None:
            out.append((f"spec.podMetricsEndpoints[{i}]", "an endpoint needs port or portNumber"))
    return out
