"""Checks of ``spec.serveConfigV2`` (Serve's config) and of the Cascade config in it.

Serve: the YAML parses to ``applications`` that each have an ``import_path``
(unique names and route prefixes, as Serve requires). Cascade: the app's
``args.config`` is present and valid, and a worker group provides
``accelerator_type:<GPU>`` for each GPU pool (else its replicas could never be
scheduled). ``k8s/`` takes plain data, so the Cascade config is parsed by the
``ConfigCheck`` the caller passes (the CLI passes ``orchestrator.config``'s); with
none, only the presence of ``args.config`` is checked.

Each check returns ``(path, message)`` pairs; an empty list means it passed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from k8s.rules import Problems
from k8s.spec import ConfigCheck

CASCADE_IMPORT_PATH = "orchestrator.app:build_app"

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*[:.][A-Za-z_]\w*$")


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


def serve_config_problems(
    doc: Mapping[str, Any], check_config: ConfigCheck | None = None
) -> tuple[Problems, Problems]:
    """Problems of ``spec.serveConfigV2`` (source ``serve``) and of a Cascade config
    found in it (source ``cascade``; parsed by ``check_config`` when given)."""
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
            cascade += _cascade_problems(doc, app, w, check_config)
    return serve, cascade


def _cascade_problems(
    doc: Mapping[str, Any],
    app: Mapping[str, Any],
    where: str,
    check_config: ConfigCheck | None,
) -> Problems:
    args = app.get("args") or {}
    source = args.get("config") if isinstance(args, Mapping) else None
    if source is None:
        return [(f"{where}.args.config", "Required value: the Cascade config (inline YAML)")]
    if isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml")):
        return []  # a path inside the image: cannot be checked offline
    if check_config is None:
        return []  # no parser given: plain data only
    try:
        data = yaml.safe_load(source) if isinstance(source, str) else source
        pools = check_config(data)
    except (ValueError, yaml.YAMLError) as exc:
        return [(f"{where}.args.config", str(exc))]
    out: Problems = []
    groups = ((doc.get("spec") or {}).get("rayClusterConfig") or {}).get("workerGroupSpecs") or []
    provided = set().union(*(_group_resources(g) for g in groups)) if groups else set()
    for name, accelerator in pools:
        if accelerator.strip().upper() == "CPU":
            continue
        need = f"accelerator_type:{accelerator}"
        if need not in provided:
            out.append(
                (
                    "spec.rayClusterConfig.workerGroupSpecs",
                    f"pool {name} needs Ray resource {need!r} but no worker group "
                    "provides it: its replicas could never be scheduled",
                )
            )
    return out
