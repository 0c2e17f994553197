"""Checks beyond the OpenAPI schemas: the KubeRay operator's own validation, Serve's
config, Cascade's config, and the shapes of the non-KubeRay objects we render.

KubeRay v1.7.0 (``ray-operator/controllers/ray/utils/validation.go``) rejects a
RayService the schema accepts when: its name is not a DNS-1035 label of at most
47 characters (53 for a RayCluster); ``upgradeStrategy.type`` is not
``NewCluster``, ``NewClusterWithIncrementalUpgrade`` or ``None`` (and incremental
upgrades need the autoscaler and complete ``clusterUpgradeOptions``); a group has
no container; a worker group's ``minReplicas`` exceeds ``maxReplicas`` or either is
negative; a group sets resources both in ``rayStartParams`` and ``resources``, or
``rayStartParams.labels``, or malformed labels; the head service is named;
GCS-FT/autoscaler-v2 environment variables contradict the spec. Those are
reproduced here with the operator's wording. Added for Cascade: unique worker
group names, ``serveConfigV2`` that parses with applications that each have an
``import_path`` (unique names and route prefixes, as Serve requires), a Cascade
config in the app's ``args.config`` that validates, and a worker group
providing ``accelerator_type:<GPU>`` for each GPU pool (else its replicas could
never be scheduled).

Each check returns ``(path, message)`` pairs; an empty list means it passed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

MAX_RAYSERVICE_NAME = 47  # KubeRay: MaxRayClusterNameLength (53) - 6 (cluster suffix)
MAX_RAYCLUSTER_NAME = 53  # 63 - len("-serve-svc")
UPGRADE_TYPES = ("NewClusterWithIncrementalUpgrade", "NewCluster", "None")
CASCADE_IMPORT_PATH = "orchestrator.app:build_app"
CONFIGMAP_MAX_BYTES = 1024 * 1024

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*[:.][A-Za-z_]\w*$")

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


# ---- KubeRay ---------------------------------------------------------------------------------
def _env_value(container: Mapping[str, Any], name: str) -> str | None:
    for item in container.get("env") or []:
        if isinstance(item, Mapping) and item.get("name") == name:
            return str(item.get("value", ""))
    return None


def _has_env(container: Mapping[str, Any], name: str) -> bool:
    return any(isinstance(e, Mapping) and e.get("name") == name for e in container.get("env") or [])


def _group_problems(group: Mapping[str, Any], name: str, where: str) -> Problems:
    out: Problems = []
    params = group.get("rayStartParams") or {}
    resources = group.get("resources") or {}
    if any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")) and resources:
        out.append(
            (
                where,
                "resource fields should not be set in both rayStartParams and Resources for "
                f"{name} group; please use only one",
            )
        )
    if "labels" in params:
        out.append(
            (
                f"{where}.rayStartParams.labels",
                f"rayStartParams['labels'] is not supported for {name} group; please use the "
                "top-level Labels field instead",
            )
        )
    for key, value in (group.get("labels") or {}).items():
        for msg in qualified_name_problems(str(key)) + label_value_problems(str(value)):
            out.append((f"{where}.labels.{key}", f"invalid label for {name} group: {msg}"))
    return out


def _containers(group: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = ((group.get("template") or {}).get("spec")) or {}
    return [c for c in spec.get("containers") or [] if isinstance(c, Mapping)]


def autoscaling_enabled(spec: Mapping[str, Any]) -> bool:
    return bool(spec.get("enableInTreeAutoscaling"))


def autoscaler_v2(spec: Mapping[str, Any]) -> bool:
    """KubeRay's IsAutoscalingV2Enabled, or the head's RAY_enable_autoscaler_v2."""
    if not autoscaling_enabled(spec):
        return False
    if (spec.get("autoscalerOptions") or {}).get("version") == "v2":
        return True
    head = _containers(spec.get("headGroupSpec") or {})
    return bool(head) and _env_value(head[0], "RAY_enable_autoscaler_v2") in ("1", "true")


def _version_tuple(v: str) -> tuple[int, ...] | None:
    parts = re.findall(r"\d+", v)
    return tuple(int(x) for x in parts[:3]) if parts else None


def _v2_group_problems(wg: Mapping[str, Any], spec: Mapping[str, Any], w: str) -> Problems:
    """validateWorkerGroupIdleTimeout / validateWorkerGroupPriority."""
    name = wg.get("groupName", "")
    v2 = autoscaler_v2(spec)
    out: Problems = []
    idle = wg.get("idleTimeoutSeconds")
    if isinstance(idle, int):
        if idle < 0:
            out.append(
                (
                    f"{w}.idleTimeoutSeconds",
                    f"worker group {name}: idleTimeoutSeconds must be non-negative, got {idle}",
                )
            )
        elif not v2:
            out.append(
                (
                    f"{w}.idleTimeoutSeconds",
                    f"worker group {name}: idleTimeoutSeconds is set, but autoscaler v2 is not "
                    "enabled. Please set .spec.autoscalerOptions.version to 'v2'",
                )
            )
    prio = wg.get("priority")
    if isinstance(prio, int) and prio != 0:
        version = _version_tuple(str(spec.get("rayVersion") or ""))
        if version is None or version < (2, 56, 0):
            out.append(
                (
                    f"{w}.priority",
                    f"worker group {name}: priority is set, but minimum Ray version is 2.56.0, "
                    f"got {spec.get('rayVersion')!r}",
                )
            )
        elif not v2:
            out.append(
                (
                    f"{w}.priority",
                    f"worker group {name}: priority is set to {prio}, but autoscaler v2 is not "
                    "enabled. Priority is only supported with autoscaler v2 enabled",
                )
            )
    return out


def raycluster_spec_problems(spec: Mapping[str, Any], where: str) -> Problems:
    """KubeRay's ValidateRayClusterSpec (the parts that apply on create)."""
    out: Problems = []
    head = spec.get("headGroupSpec") or {}
    head_containers = _containers(head)
    if not head_containers:
        out.append((f"{where}.headGroupSpec", "headGroupSpec should have at least one container"))
    out += _group_problems(head, "Head", f"{where}.headGroupSpec")
    auto = autoscaling_enabled(spec)
    names: dict[str, int] = {}
    for i, wg in enumerate(spec.get("workerGroupSpecs") or []):
        w = f"{where}.workerGroupSpecs[{i}]"
        name = str(wg.get("groupName", ""))
        if name in names:
            out.append(
                (f"{w}.groupName", f"duplicate worker group name {name!r} (also [{names[name]}])")
            )
        names.setdefault(name, i)
        if not _containers(wg):
            out.append((w, "workerGroupSpec should have at least one container"))
        lo, hi = wg.get("minReplicas"), wg.get("maxReplicas")
        if not auto and (lo is None or hi is None):
            out.append(
                (
                    w,
                    f"worker group {name} must set both minReplicas and maxReplicas when "
                    "autoscaling is disabled",
                )
            )
        if isinstance(lo, int) and lo < 0:
            out.append((f"{w}.minReplicas", f"worker group {name} has negative minReplicas {lo}"))
        if isinstance(hi, int) and hi < 0:
            out.append((f"{w}.maxReplicas", f"worker group {name} has negative maxReplicas {hi}"))
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            out.append(
                (
                    f"{w}.minReplicas",
                    f"worker group {name} has minReplicas {lo} greater than maxReplicas {hi}",
                )
            )
        out += _group_problems(wg, name, w)
        out += _v2_group_problems(wg, spec, w)
        if autoscaler_v2(spec):
            policy = ((wg.get("template") or {}).get("spec") or {}).get("restartPolicy")
            if policy not in (None, "", "Never"):
                out.append(
                    (
                        f"{w}.template.spec.restartPolicy",
                        f"restartPolicy for worker group {name} should be Never or unset when "
                        "using autoscaler V2",
                    )
                )
        if auto and wg.get("suspend"):
            out.append(
                (f"{w}.suspend", f"worker group {name} cannot be suspended with Autoscaler enabled")
            )
    if head_containers:
        c0 = head_containers[0]
        gcs_ft = spec.get("gcsFaultToleranceOptions") is not None
        if not gcs_ft and _has_env(c0, "RAY_REDIS_ADDRESS"):
            out.append(
                (
                    f"{where}.headGroupSpec",
                    "RAY_REDIS_ADDRESS is set which implicitly enables GCS fault tolerance, but "
                    "GcsFaultToleranceOptions is not set",
                )
            )
        v2 = _env_value(c0, "RAY_enable_autoscaler_v2")
        if not auto and v2 in ("1", "true"):
            out.append(
                (
                    f"{where}.headGroupSpec",
                    f"environment variable RAY_enable_autoscaler_v2 cannot be set to '{v2}' when "
                    "enableInTreeAutoscaling is false",
                )
            )
    head_policy = ((head.get("template") or {}).get("spec") or {}).get("restartPolicy")
    if autoscaler_v2(spec) and head_policy not in (None, "", "Never"):
        out.append(
            (
                f"{where}.headGroupSpec.template.spec.restartPolicy",
                "restartPolicy for head Pod should be Never or unset when using autoscaler V2",
            )
        )
    idle = (spec.get("autoscalerOptions") or {}).get("idleTimeoutSeconds")
    if isinstance(idle, int) and idle < 0:
        out.append(
            (
                f"{where}.autoscalerOptions.idleTimeoutSeconds",
                f"autoscalerOptions.idleTimeoutSeconds must be non-negative, got {idle}",
            )
        )
    return out


def rayservice_problems(doc: Mapping[str, Any]) -> Problems:
    """KubeRay's ValidateRayServiceMetadata + ValidateRayServiceSpec."""
    meta = doc.get("metadata") or {}
    out = dns1035_problems(str(meta.get("name", "")), "RayService", MAX_RAYSERVICE_NAME)
    spec = doc.get("spec") or {}
    cluster = spec.get("rayClusterConfig") or {}
    out += raycluster_spec_problems(cluster, "spec.rayClusterConfig")
    head_svc = (cluster.get("headGroupSpec") or {}).get("headService") or {}
    if (head_svc.get("metadata") or {}).get("name"):
        out.append(
            (
                "spec.rayClusterConfig.headGroupSpec.headService.metadata.name",
                "spec.rayClusterConfig.headGroupSpec.headService.metadata.name should not be set",
            )
        )
    strategy = spec.get("upgradeStrategy") or {}
    utype = strategy.get("type")
    if utype is not None and utype not in UPGRADE_TYPES:
        out.append(
            (
                "spec.upgradeStrategy.type",
                f"Spec.UpgradeStrategy.Type value {utype} is invalid, valid options are "
                "NewClusterWithIncrementalUpgrade, NewCluster, or None",
            )
        )
    delay = spec.get("rayClusterDeletionDelaySeconds")
    if isinstance(delay, int) and delay < 0:
        out.append(
            (
                "spec.rayClusterDeletionDelaySeconds",
                "Spec.RayClusterDeletionDelaySeconds should be a non-negative integer, "
                f"got {delay}",
            )
        )
    if utype == "NewClusterWithIncrementalUpgrade":
        out += _incremental_problems(strategy, autoscaling_enabled(cluster))
    return out


def _incremental_problems(strategy: Mapping[str, Any], autoscaling: bool) -> Problems:
    w = "spec.upgradeStrategy.clusterUpgradeOptions"
    if not autoscaling:
        return [
            (
                "spec.upgradeStrategy",
                "Ray Autoscaler is required for NewClusterWithIncrementalUpgrade",
            )
        ]
    opts = strategy.get("clusterUpgradeOptions")
    if not isinstance(opts, Mapping):
        return [(w, "ClusterUpgradeOptions are required for NewClusterWithIncrementalUpgrade")]
    out: Problems = []
    surge = opts.get("maxSurgePercent", 100)
    if not isinstance(surge, int) or not 0 <= surge <= 100:
        out.append((f"{w}.maxSurgePercent", "maxSurgePercent must be between 0 and 100"))
    step = opts.get("stepSizePercent")
    if not isinstance(step, int) or not 0 <= step <= 100:
        out.append((f"{w}.stepSizePercent", "stepSizePercent must be between 0 and 100"))
    interval = opts.get("intervalSeconds")
    if not isinstance(interval, int) or interval <= 0:
        out.append((f"{w}.intervalSeconds", "intervalSeconds must be greater than 0"))
    if not opts.get("gatewayClassName"):
        out.append(
            (
                f"{w}.gatewayClassName",
                "gatewayClassName is required for NewClusterWithIncrementalUpgrade",
            )
        )
    return out


def raycluster_problems(doc: Mapping[str, Any]) -> Problems:
    meta = doc.get("metadata") or {}
    out = dns1035_problems(str(meta.get("name", "")), "RayCluster", MAX_RAYCLUSTER_NAME)
    return out + raycluster_spec_problems(doc.get("spec") or {}, "spec")


# ---- serveConfigV2 and the Cascade config -------------------------------------------------------
def _group_resources(group: Mapping[str, Any]) -> set[str]:
    names = {str(k) for k in (group.get("resources") or {})}
    raw = (group.get("rayStartParams") or {}).get("resources")
    if isinstance(raw, str):
        try:  # KubeRay's format: '"{\"Custom\": 1}"'
            parsed = json.loads(
                raw.strip()[1:-1].replace("\\", "") if raw.strip()[:1] in "'\"" else raw
            )
            if isinstance(parsed, Mapping):
                names |= {str(k) for k in parsed}
        except ValueError:
            pass
    return names


def serve_config_problems(doc: Mapping[str, Any]) -> tuple[Problems, list[tuple[str, str]]]:
    """Problems of ``spec.serveConfigV2`` (source ``serve``) and of a Cascade config
    found in it (source ``cascade``)."""
    where = "spec.serveConfigV2"
    text = (doc.get("spec") or {}).get("serveConfigV2")
    if not text:
        return [(where, "serveConfigV2 is empty: the RayService would deploy no application")], []
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return [(where, f"serveConfigV2 is not valid YAML{at}: {getattr(exc, 'problem', exc)}")], []
    if not isinstance(cfg, Mapping):
        return [(where, "serveConfigV2 must be a mapping with 'applications'")], []
    apps = cfg.get("applications")
    if not isinstance(apps, list) or not apps:
        return [
            (f"{where}.applications", "serveConfigV2 needs a non-empty 'applications' list")
        ], []
    serve: Problems = []
    cascade: Problems = []
    names: set[str] = set()
    prefixes: set[str] = set()
    for i, app in enumerate(apps):
        w = f"{where}.applications[{i}]"
        if not isinstance(app, Mapping):
            serve.append((w, "an application must be a mapping"))
            continue
        ip = app.get("import_path")
        if not isinstance(ip, str) or not ip:
            serve.append(
                (f"{w}.import_path", "Required value: every application needs an import_path")
            )
        elif not _IMPORT_PATH.match(ip):
            serve.append((f"{w}.import_path", f"{ip!r} is not of the form module.sub:attribute"))
        name = str(app.get("name", "default"))
        if name in names:
            serve.append((f"{w}.name", f"duplicate application name {name!r}"))
        names.add(name)
        prefix = app.get("route_prefix", "/")
        if prefix is not None:
            if prefix in prefixes:
                serve.append((f"{w}.route_prefix", f"duplicate route_prefix {prefix!r}"))
            prefixes.add(prefix)
        if ip == CASCADE_IMPORT_PATH:
            cascade += _cascade_problems(doc, app, w)
    return serve, cascade


def _cascade_problems(doc: Mapping[str, Any], app: Mapping[str, Any], where: str) -> Problems:
    from orchestrator.config import parse_config

    args = app.get("args") or {}
    source = args.get("config") if isinstance(args, Mapping) else None
    if source is None:
        return [(f"{where}.args.config", "Required value: the Cascade config (inline YAML)")]
    if isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml")):
        return []  # a path inside the image: cannot be checked offline
    try:
        data = yaml.safe_load(source) if isinstance(source, str) else source
        config = parse_config(data, "Cascade config")
    except (ValueError, yaml.YAMLError) as exc:
        return [(f"{where}.args.config", str(exc))]
    out: Problems = []
    groups = ((doc.get("spec") or {}).get("rayClusterConfig") or {}).get("workerGroupSpecs") or []
    provided = set().union(*(_group_resources(g) for g in groups)) if groups else set()
    for pool in config.pools:
        if pool.accelerator.strip().upper() == "CPU":
            continue
        need = f"accelerator_type:{pool.accelerator}"
        if need not in provided:
            out.append(
                (
                    "spec.rayClusterConfig.workerGroupSpecs",
                    f"pool {pool.name} needs Ray resource {need!r} but no worker group "
                    "provides it: its replicas could never be scheduled",
                )
            )
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
