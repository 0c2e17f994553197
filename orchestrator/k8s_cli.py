"""``cascade k8s``: render KubeRay manifests from a Cascade config; validate manifests.

``cascade k8s render [--config FILE]`` prints the RayService, PodMonitor,
Grafana-dashboard ConfigMap and the Ray pods' NetworkPolicy as one multi-document
YAML (default config: ``examples/cluster.yaml``); the result is validated before
it is printed.
``cascade k8s validate FILE...`` checks manifests offline against the KubeRay
v1.7.0 CRDs (``$CASCADE_KUBERAY_CRDS`` or ``../shared/kuberay-crds``), the
operator's rules and Cascade's own checks; exit status 1 when any fails.

``k8s/`` takes plain data: ``service_spec`` turns a Cascade config into the
``ServiceSpec`` it renders, and ``cascade_pools`` is the Cascade-config check it
validates with (both here, at the top, where the config schema is importable).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.config import EXAMPLES_DIR, CascadeConfig, load_config, parse_config

if TYPE_CHECKING:
    from k8s.spec import ServiceSpec

CLUSTER_CONFIG = EXAMPLES_DIR / "cluster.yaml"


def service_spec(config: CascadeConfig) -> ServiceSpec:
    """What ``k8s.render`` renders for ``config``: its pools, the config as YAML text
    for the app's ``config`` argument (defaults omitted; parses back to an equal
    ``CascadeConfig``), and the Grafana dashboard."""
    from k8s.render import dump_yaml
    from k8s.spec import ApiTokenSpec, PoolSpec, ServiceSpec
    from orchestrator.dashboard import DASHBOARD_UID, dashboard_json

    body = dump_yaml(config.model_dump(mode="json", exclude_defaults=True))
    header = f"# Cascade config {config.name!r} (cascade k8s render; defaults omitted)\n"
    pools = tuple(
        PoolSpec(
            name=p.name,
            accelerator=p.accelerator,
            tp_size=p.tp_size,
            min_replicas=p.min_replicas,
            max_replicas=p.max_replicas,
            start_replicas=p.start_replicas,
            node_selector=dict(p.node_selector),
        )
        for p in config.pools
    )
    auth = config.auth
    token = None
    if auth.token_env:  # the ingress's token: from a Secret, never in the manifests
        secret = auth.k8s_secret or f"{config.name}-api-token"
        token = ApiTokenSpec(env=auth.token_env, secret=secret, key=auth.k8s_secret_key)
    return ServiceSpec(
        name=config.name,
        pools=pools,
        app_config=header + body,
        dashboard_uid=DASHBOARD_UID,
        dashboard_json=dashboard_json(config),
        api_token=token,
    )


def cascade_pools(data: Any) -> list[tuple[str, str]]:
    """The Cascade-config check of ``k8s.validate`` (a ``k8s.spec.ConfigCheck``):
    ``(name, accelerator)`` of each pool; ``ValueError`` naming the key path when
    ``data`` is not a valid Cascade config."""
    config = parse_config(data, "Cascade config")
    return [(p.name, p.accelerator) for p in config.pools]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from k8s.render import RenderOptions

    d = RenderOptions()
    sub = parser.add_subparsers(dest="k8s_command", required=True, metavar="ACTION")
    r = sub.add_parser("render", help="print the manifests for a Cascade config")
    r.add_argument("--config", type=Path, default=CLUSTER_CONFIG, help="Cascade YAML file")
    r.add_argument("--out", type=Path, default=None, help="write to FILE instead of stdout")
    r.add_argument("--image", default=d.image, help="container image with Cascade and Ray")
    r.add_argument("--namespace", default=None, help="metadata.namespace of every object")
    r.add_argument("--grafana-host", default=d.grafana_host, help="Grafana as the head reaches it")
    r.add_argument(
        "--grafana-iframe-host", default=d.grafana_iframe_host, help="Grafana as browsers reach it"
    )
    r.add_argument(
        "--prometheus-host", default=d.prometheus_host, help="Prometheus URL for the head"
    )
    r.add_argument(
        "--prometheus-release", default=d.prometheus_release, help="PodMonitor 'release' label"
    )
    r.add_argument(
        "--hf-token-secret", default=d.hf_token_secret, help="Secret with key HF_TOKEN ('' = none)"
    )
    r.add_argument(
        "--operator-namespace",
        default=d.operator_namespace,
        help="KubeRay operator's namespace: the only one whose operator may reach the dashboard "
        "(default: the operator's pods in any namespace)",
    )
    r.add_argument(
        "--prometheus-namespace",
        default=d.prometheus_namespace,
        help="namespace whose pods may scrape the metrics ports ('' = none)",
    )
    v = sub.add_parser("validate", help="validate manifests offline (KubeRay v1.7.0 CRDs)")
    v.add_argument("files", nargs="+", type=Path, help="YAML files ('-' = stdin)")
    v.add_argument("--crds", default=None, help="directory of the KubeRay CRD YAML files")
    v.add_argument("--quiet", action="store_true", help="print problems only")


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (stable rendered headers)."""
    try:
        return str(path.resolve().relative_to(EXAMPLES_DIR.parent))
    except ValueError:
        return str(path)


def _render(args: argparse.Namespace) -> int:
    from k8s.render import RenderOptions, render_manifests, to_yaml
    from k8s.validate import validate_documents

    config = load_config(args.config)
    options = RenderOptions(
        image=args.image,
        namespace=args.namespace,
        grafana_host=args.grafana_host,
        grafana_iframe_host=args.grafana_iframe_host,
        prometheus_host=args.prometheus_host,
        prometheus_release=args.prometheus_release,
        hf_token_secret=args.hf_token_secret or None,
        operator_namespace=args.operator_namespace or None,
        prometheus_namespace=args.prometheus_namespace or None,
    )
    docs = render_manifests(service_spec(config), options)
    issues = validate_documents(docs, check_config=cascade_pools)
    if issues:  # a renderer bug or an option the operator would refuse: never print it
        for issue in issues:
            print(f"cascade k8s render: {issue}", file=sys.stderr)
        return 1
    shown = _shown(args.config)
    header = f"# Rendered by `cascade k8s render --config {shown}`; do not edit by hand.\n"
    text = to_yaml(docs, header=header)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {len(docs)} manifests to {args.out}", file=sys.stderr)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from k8s.validate import Issue, load_documents, validate_documents

    failed = 0
    for f in args.files:
        name = "<stdin>" if str(f) == "-" else str(f)
        issues: list[Issue]
        try:
            text = sys.stdin.read() if name == "<stdin>" else f.read_text()
            docs = load_documents(text, name)
        except (OSError, ValueError) as exc:
            issues, docs = [Issue(name, "", str(exc), "yaml")], []
        else:
            issues = (
                validate_documents(docs, crds=args.crds, check_config=cascade_pools)
                if docs
                else [Issue(name, "", "no documents", "document")]
            )
        if issues:
            failed += 1
            for issue in issues:
                print(f"{name}: {issue}")
        elif not args.quiet:
            kinds = Counter(str(d.get("kind")) for d in docs)
            shown = ", ".join(f"{n} {k}" for k, n in kinds.items())
            print(f"{name}: OK ({shown})")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    if args.k8s_command == "render":
        return _render(args)
    return _validate(args)
