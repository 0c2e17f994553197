"""KubeRay v1.7.0's own validation of RayService and RayCluster objects.

Reproduces, with the operator's wording, what
``ray-operator/controllers/ray/utils/validation.go`` rejects in an object the
schema accepts: a RayService name that is not a DNS-1035 label of at most 47
characters (53 for a RayCluster); ``upgradeStrategy.type`` other than
``NewCluster``, ``NewClusterWithIncrementalUpgrade`` or ``None`` (and incremental
upgrades without the autoscaler or complete ``clusterUpgradeOptions``); a group
with no container; a worker group whose ``minReplicas`` exceeds ``maxReplicas``
or either is negative; resources both in ``rayStartParams`` and ``resources``,
``rayStartParams.labels``, malformed labels; a named head service;
GCS-FT/autoscaler-v2 environment variables that contradict the spec. Added for
Cascade: unique worker group names.

Each check returns ``(path, message)`` pairs; an empty list means it passed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from k8s.rules import Problems, dns1035_problems, label_value_problems, qualified_name_problems

MAX_RAYSERVICE_NAME = 47  # KubeRay: MaxRayClusterNameLength (53) - 6 (cluster suffix)
MAX_RAYCLUSTER_NAME = 53  # 63 - len("-serve-svc")
UPGRADE_TYPES = ("NewClusterWithIncrementalUpgrade", "NewCluster", "None")


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
