"""``cascade dashboard``: export or push the Grafana dashboard; helpers for Prometheus.

``cascade dashboard export --out FILE`` writes the dashboard JSON (``-`` = stdout).
``cascade dashboard push --url URL [--token T]`` creates or updates it in Grafana
(idempotent; the token may also come from ``$GRAFANA_TOKEN``).
``cascade dashboard queries`` prints every PromQL expression in the dashboard.
``cascade dashboard prometheus-config --out FILE`` writes a prometheus.yml that
scrapes Ray's service-discovery file.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from orchestrator.config import CascadeConfig, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dashboard_command", required=True, metavar="ACTION")
    e = sub.add_parser("export", help="write the dashboard JSON")
    e.add_argument("--out", required=True, help="output file ('-' = stdout)")
    p = sub.add_parser("push", help="create or update the dashboard in Grafana")
    p.add_argument("--url", required=True, help="Grafana base URL, e.g. http://localhost:3000")
    p.add_argument("--token", default=None, help="service-account token (default $GRAFANA_TOKEN)")
    p.add_argument("--folder-uid", default=None, help="Grafana folder uid")
    p.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout, seconds")
    q = sub.add_parser("queries", help="print every PromQL expression of the dashboard")
    q.add_argument("--raw", action="store_true", help="keep the Grafana variables ($pool, ...)")
    for s in (e, p, q):
        s.add_argument(
            "--config", type=Path, default=None, help="Cascade YAML (SLO lines on the panels)"
        )
    c = sub.add_parser("prometheus-config", help="write a prometheus.yml scraping Ray's nodes")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--sd-file", default=None, help="Ray's service-discovery file")
    c.add_argument("--scrape-interval", default="5s")


def _config(args: argparse.Namespace) -> CascadeConfig | None:
    return load_config(args.config) if args.config is not None else None


def run(args: argparse.Namespace) -> int:
    from orchestrator import dashboard as d

    cmd = args.dashboard_command
    if cmd == "export":
        text = d.dashboard_json(_config(args))
        if args.out == "-":
            sys.stdout.write(text)
        else:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            print(f"wrote {out}", file=sys.stderr)
        return 0
    if cmd == "push":
        token = args.token or os.environ.get("GRAFANA_TOKEN") or None
        result = d.push_dashboard(
            args.url,
            token,
            dashboard=d.build_dashboard(_config(args)),
            folder_uid=args.folder_uid,
            timeout_s=args.timeout,
        )
        where = f" at {result.url}" if result.url else ""
        print(f"dashboard {result.uid}: {result.action} (version {result.version}){where}")
        return 0
    if cmd == "queries":
        for expr in d.dashboard_queries(_config(args), raw=args.raw):
            print(expr)
        return 0
    sd = args.sd_file or d.RAY_SD_FILE
    path = d.write_prometheus_config(args.out, sd, scrape_interval=args.scrape_interval)
    print(f"wrote {path} (scrapes the Ray nodes listed in {sd})", file=sys.stderr)
    return 0
