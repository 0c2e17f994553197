"""Validate manifests offline: KubeRay v1.7.0 CRDs, the operator's rules, ours.

``validate_documents(docs)`` checks each document by kind:

* ``ray.io/v1`` ``RayService`` / ``RayCluster``: the ``v1`` ``openAPIV3Schema``
  of the CRD files in ``crd_dir()`` (``$CASCADE_KUBERAY_CRDS``, else
  ``<repo>/../shared/kuberay-crds``), after dropping nulls and applying defaults
  as the API server does, with unknown fields rejected (``k8s.schema``); then the
  operator's own rules (``k8s.kuberay_rules``) and Serve/Cascade checks
  (``k8s.serve_rules``; the Cascade config is parsed by the ``check_config`` the
  caller passes, as ``k8s/`` takes plain data: the CLI passes
  ``orchestrator.k8s_cli.cascade_pools``; without one it is only checked present);
* ``monitoring.coreos.com/v1`` ``PodMonitor``: a small embedded schema of the
  fields we use (``k8s.builtin_schemas``; the real CRD is not shipped here);
* ``v1`` ``ConfigMap``: its basic shape (string data, key syntax, 1 MiB) and, for
  a Grafana dashboard, JSON that parses with ``uid``/``title``/``panels``.

Every document also gets ObjectMeta checks (name, namespace, label syntax).
Any other kind is reported as unsupported. ``Issue.source`` says which layer
found a problem: ``yaml``, ``document``, ``schema``, ``kuberay``, ``serve``,
``cascade``, ``podmonitor``, ``configmap`` or ``metadata``.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from k8s import kuberay_rules, rules, security_rules, serve_rules
from k8s.builtin_schemas import CONFIGMAP, INGRESS, PODMONITOR
from k8s.schema import OBJECT_META, iter_schema_errors, normalize, to_jsonschema
from k8s.spec import ConfigCheck

CRD_ENV = "CASCADE_KUBERAY_CRDS"
KUBERAY_VERSION = "v1.7.0"


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem: which document, where in it, what, and which check found it."""

    document: str  # "RayService/name" (or "document[i]" when it has no kind/name)
    path: str
    message: str
    source: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.document}: {where}{self.message} [{self.source}]"


def crd_dir() -> Path:
    """Where the KubeRay CRD YAML files are."""
    env = os.environ.get(CRD_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "kuberay-crds"


@dataclass(frozen=True)
class _Kind:
    structural: Mapping[str, Any]
    jsonschema: Mapping[str, Any]


def _with_meta(schema: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    props = dict(out.get("properties", {}))
    props["metadata"] = OBJECT_META
    out["properties"] = props
    return out


@functools.lru_cache(maxsize=4)
def crd_schemas(directory: str) -> Mapping[tuple[str, str], _Kind]:
    """``(apiVersion, kind) -> schema`` for every served version of every CRD in
    ``directory``. ``FileNotFoundError`` if it holds no CRD files."""
    d = Path(directory)
    files = sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")) if d.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"no KubeRay CRD files in {d} (set {CRD_ENV} to the directory of the "
            f"KubeRay {KUBERAY_VERSION} CRDs)"
        )
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out: dict[tuple[str, str], _Kind] = {}
    for f in files:
        for crd in yaml.load_all(f.read_text(), Loader=loader):
            if not isinstance(crd, Mapping) or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec.get("versions", []):
                if not version.get("served", True):
                    continue
                structural = _with_meta(version["schema"]["openAPIV3Schema"])
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                out[key] = _Kind(structural, to_jsonschema(structural))
    return out


def _kind(schema: Mapping[str, Any]) -> _Kind:
    return _Kind(_with_meta(schema), to_jsonschema(_with_meta(schema)))


@functools.lru_cache(maxsize=1)
def _builtin() -> Mapping[tuple[str, str], _Kind]:
    return {
        ("monitoring.coreos.com/v1", "PodMonitor"): _kind(PODMONITOR),
        ("v1", "ConfigMap"): _kind(CONFIGMAP),
        ("networking.k8s.io/v1", "Ingress"): _kind(INGRESS),
    }


@functools.lru_cache(maxsize=4)
def core_schemas(directory: str) -> Mapping[tuple[str, str], _Kind]:
    """The core ``v1`` Service and ``networking.k8s.io/v1`` NetworkPolicy, as the
    KubeRay CRD embeds them (a RayService's ``serveService`` is a whole Service;
    its ``networkPolicy`` rules are NetworkPolicy rules)."""
    spec = crd_schemas(directory)[("ray.io/v1", "RayService")].structural["properties"]["spec"]
    props = spec["properties"]
    rules = props["rayClusterConfig"]["properties"]["networkPolicy"]["properties"]["head"]
    ingress = rules["properties"]["ingressRules"]
    selector = ingress["items"]["properties"]["from"]["items"]["properties"]["podSelector"]
    policy_spec = {
        "type": "object",
        "properties": {
            "podSelector": selector,
            "policyTypes": {
                "type": "array",
                "items": {"type": "string", "enum": ["Ingress", "Egress"]},
            },
            "ingress": ingress,
            "egress": rules["properties"]["egressRules"],
        },
    }
    top = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}}
    policy = {"type": "object", "required": ["spec"], "properties": {**top, "spec": policy_spec}}
    return {
        ("v1", "Service"): _kind(props["serveService"]),
        ("networking.k8s.io/v1", "NetworkPolicy"): _kind(policy),
    }


def _label(doc: Mapping[str, Any], index: int) -> str:
    kind = doc.get("kind")
    name = (
        (doc.get("metadata") or {}).get("name")
        if isinstance(doc.get("metadata"), Mapping)
        else None
    )
    if isinstance(kind, str) and isinstance(name, str) and name:
        return f"{kind}/{name}"
    return f"document[{index}]" + (f" ({kind})" if isinstance(kind, str) else "")


def validate_document(
    doc: Any, index: int = 0, *, crds: str | None = None, check_config: ConfigCheck | None = None
) -> list[Issue]:
    """Problems of one parsed document (empty list = valid)."""
    if not isinstance(doc, Mapping):
        return [Issue(f"document[{index}]", "", "a manifest must be a mapping", "document")]
    label = _label(doc, index)
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api, str) or not isinstance(kind, str):
        return [Issue(label, "", "Required value: apiVersion and kind", "document")]
    key = (api, kind)
    builtin = _builtin()
    directory = str(crds or crd_dir())
    known = builtin if key in builtin else {**crd_schemas(directory), **core_schemas(directory)}
    if key not in known:
        kinds = sorted(f"{a} {k}" for a, k in {**known, **_builtin()})
        return [
            Issue(
                label, "", f"unsupported apiVersion/kind {api} {kind}; known: {kinds}", "document"
            )
        ]
    spec = known[key]
    obj = normalize(copy.deepcopy(dict(doc)), spec.structural)
    issues = [Issue(label, p, m, "schema") for p, m in iter_schema_errors(obj, spec.jsonschema)]
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        rule = "dns1035" if kind in ("RayService", "RayCluster") else "subdomain"
        issues += [
            Issue(label, p, m, "metadata") for p, m in rules.metadata_problems(meta, name_rule=rule)
        ]
    else:
        issues.append(Issue(label, "metadata", "Required value: metadata", "metadata"))
    if any(i.source == "schema" for i in issues):
        # the operator's rules assume a schema-valid object; report the schema first
        return issues
    if kind == "RayService":
        issues += [Issue(label, p, m, "kuberay") for p, m in kuberay_rules.rayservice_problems(obj)]
        serve, cascade = serve_rules.serve_config_problems(obj, check_config)
        issues += [Issue(label, p, m, "serve") for p, m in serve]
        issues += [Issue(label, p, m, "cascade") for p, m in cascade]
        secure = security_rules.exposure_problems(obj) + security_rules.token_problems(obj)
        issues += [Issue(label, p, m, "security") for p, m in secure]
    elif kind == "RayCluster":
        issues += [Issue(label, p, m, "kuberay") for p, m in kuberay_rules.raycluster_problems(obj)]
        secure = security_rules.exposure_problems(obj)
        issues += [Issue(label, p, m, "security") for p, m in secure]
    elif kind == "Service":
        secure = security_rules.service_problems(obj)
        issues += [Issue(label, p, m, "security") for p, m in secure]
    elif kind == "Ingress":
        secure = security_rules.ingress_problems(obj)
        issues += [Issue(label, p, m, "security") for p, m in secure]
    elif kind == "PodMonitor":
        issues += [Issue(label, p, m, "podmonitor") for p, m in rules.podmonitor_problems(obj)]
    elif kind == "ConfigMap":
        issues += [Issue(label, p, m, "configmap") for p, m in rules.configmap_problems(obj)]
    return issues


def validate_documents(
    docs: Iterable[Any], *, crds: str | None = None, check_config: ConfigCheck | None = None
) -> list[Issue]:
    """Problems of a sequence of parsed documents (``None`` documents are skipped,
    like ``kubectl`` skips empty ones), then of the documents together: every Ray
    head is guarded by a NetworkPolicy among them (``security_rules``)."""
    out: list[Issue] = []
    kept = [doc for doc in docs if doc is not None]
    for i, doc in enumerate(kept):
        out += validate_document(doc, i, crds=crds, check_config=check_config)
    if not any(i.source == "schema" for i in out):  # the rules assume schema-valid objects
        for i, path, message in security_rules.networkpolicy_problems(kept):
            out.append(Issue(_label(kept[i], i), path, message, "security"))
    return out


def load_documents(text: str, source: str = "<input>") -> list[Any]:
    """Parse a multi-document YAML stream; ``ValueError`` with line/column on a
    syntax error."""
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{source}{at}: invalid YAML: {getattr(exc, 'problem', exc)}") from None


def validate_file(
    path: str | Path, *, crds: str | None = None, check_config: ConfigCheck | None = None
) -> list[Issue]:
    """Problems of every document in a YAML file (a YAML syntax error is one Issue)."""
    p = Path(path)
    try:
        docs = load_documents(p.read_text(), str(p))
    except ValueError as exc:
        return [Issue(str(p), "", str(exc), "yaml")]
    if not docs:
        return [Issue(str(p), "", "no documents", "document")]
    return validate_documents(docs, crds=crds, check_config=check_config)


def summarize(issues: Sequence[Issue]) -> str:
    """One line per issue."""
    return "\n".join(str(i) for i in issues)
