"""``cascade up | status | load | down``: run Cascade on a local Ray cluster.

``up`` starts a local Ray head (``ray start``, with one custom resource per
pool accelerator so each pool's replicas can be placed) unless one is running,
deploys the app from the config and returns once it is ready, printing the
OpenAI base URL; a controller left running with another config is replaced, and
``up`` says so, naming both configs. ``status`` prints the controller's config
(name and fingerprint), pools, replicas, σ per level and the Plan, with a warning
when the controller's config is not the deployed app's or no replica reports.
``load`` (``orchestrator.load_cli``, re-exported here) replays a trace through
the HTTP API (streaming, progress bar) and prints a latency table. ``down``
(``orchestrator.down_cli``) shuts the app, the controller and Ray down. ``up``
and ``down`` print what they change.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.down_cli import (  # re-exported: cascade down, the demo, bench ab, e2e
    add_down_arguments,
    reap_orphaned_engines,
    run_down,
)
from orchestrator.load_cli import (  # re-exported: cascade load, the demo, bench ab
    add_load_arguments,
    plot_load,
    print_report,
    run_load,
)

__all__ = [
    "APP_NAME",
    "add_down_arguments",
    "add_load_arguments",
    "add_status_arguments",
    "add_up_arguments",
    "plot_load",
    "print_report",
    "reap_orphaned_engines",
    "restart_text",
    "router_rows",
    "run_down",
    "run_load",
    "run_status",
    "run_up",
    "start_ray_head",
    "status_warnings",
    "wait_app_ready",
]

APP_NAME = "cascade"


def add_up_arguments(up: argparse.ArgumentParser) -> None:
    up.add_argument("--config", default=None, help="Cascade YAML (default: examples/default.yaml)")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--num-cpus", type=int, default=8, help="logical CPUs for a new Ray head")
    up.add_argument("--time-scale", type=float, default=1.0, help="SimEngine speed (sim only)")
    up.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for readiness")


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _ray_cli() -> str:
    """The ``ray`` command of this interpreter's environment (the venv may not be
    on PATH)."""
    local = Path(sys.executable).parent / "ray"
    return str(local) if local.exists() else "ray"


# ---- up -------------------------------------------------------------------------------
def _resources(cfg: Any) -> dict[str, float]:
    from orchestrator.app import accelerator_resource

    return {accelerator_resource(p): 1000.0 for p in cfg.pools}


def _connect() -> bool:
    """Connect to the running local Ray cluster (once per process); False if none."""
    import ray

    if ray.is_initialized():
        return True
    try:
        ray.init(
            address="auto", namespace="cascade", logging_level=logging.ERROR, log_to_driver=False
        )
        return True
    except ConnectionError:
        return False


def start_ray_head(cfg: Any, num_cpus: int) -> bool:
    """Connect to the local Ray cluster, starting a head first when none runs
    (``num_cpus`` logical CPUs, one custom resource per pool accelerator).
    Returns True when it started one. Raises ``RuntimeError`` if it cannot connect."""
    if _connect():
        return False
    subprocess.run(
        [_ray_cli(), "start", "--head", f"--num-cpus={num_cpus}",
         f"--resources={json.dumps(_resources(cfg))}", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", "--disable-usage-stats"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    if not _connect():
        raise RuntimeError("could not connect to the Ray head just started")
    return True


def wait_app_ready(app_name: str, timeout_s: float) -> None:
    """Block until Serve reports ``app_name`` RUNNING. Raises ``RuntimeError``
    when it fails to deploy or is not ready after ``timeout_s`` seconds."""
    from ray import serve

    t0 = time.time()
    while True:
        status = serve.status().applications.get(app_name)
        state = str(status.status) if status is not None else "MISSING"
        if state.endswith("RUNNING"):
            return
        if state.endswith("DEPLOY_FAILED") or time.time() - t0 > timeout_s:
            msg = status.message if status is not None else ""
            raise RuntimeError(
                f"{app_name} not ready ({state}) after {time.time() - t0:.0f} s: {msg}"
            )
        time.sleep(2.0)


def run_up(args: argparse.Namespace) -> int:
    from rich.console import Console

    from orchestrator.app import resolve_config

    console = Console(stderr=True)
    cfg = resolve_config(args.config)
    auth = _auth_text(cfg, args.port)  # before anything starts: a missing token stops here
    if start_ray_head(cfg, args.num_cpus):
        console.print(f"[cascade up] started a local Ray head ({args.num_cpus} logical CPUs)")
    from ray import serve

    from orchestrator.app import build_app
    from orchestrator.controller_start import ensure_controller

    # before the app: a controller left by another config (a running app, or a
    # crashed session on a Ray cluster that outlived it) is replaced, and said so
    started = ensure_controller(cfg)
    if started.message:
        console.print(f"[bold yellow][cascade up] {started.message}[/]")
    else:
        console.print(f"[cascade up] controller {started.action}: config {_config_text(cfg)}")
    console.print("[cascade up] its mutating calls need this cluster's controller secret "
                  "(Ray internal KV, namespace cascade); the deployments get it")  # fmt: skip
    console.print(f"[cascade up] {auth}")
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    console.print(f"[cascade up] deploying {len(cfg.pools)} pools ({cfg.model.engine} engine)")
    t0 = time.time()
    app = build_app({"config": cfg.model_dump(mode="json"), "time_scale": args.time_scale})
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    wait_app_ready(APP_NAME, args.timeout)
    print(f"http://127.0.0.1:{args.port}/v1")
    console.print(f"[cascade up] ready in {time.time() - t0:.0f} s; model {cfg.model.name!r}")
    return 0


def _auth_text(cfg: Any, port: int) -> str:
    """What ``up`` says about ingress auth; ``ValueError`` naming the variable when
    the config asks for a token that this environment does not hold."""
    import os

    from orchestrator.access import resolve_token

    if not cfg.auth.token_env:
        return (f"ingress auth off: anyone who reaches 127.0.0.1:{port} may send requests "
                "(auth.token_env in the config turns bearer tokens on)")  # fmt: skip
    resolve_token(cfg.auth.token_env, os.environ, "cascade up")
    return (f"ingress auth on: requests need 'Authorization: Bearer ${cfg.auth.token_env}' "
            "(a Ray cluster started without it cannot pass it to the ingress)")  # fmt: skip


def _config_text(cfg: Any) -> str:
    from orchestrator.controller_state import config_fingerprint, describe_config

    return describe_config(cfg.name, config_fingerprint(cfg), [p.name for p in cfg.pools])


# ---- status ------------------------------------------------------------------------------
STATUS_TIMEOUT_S = 30.0


def _controller() -> Any:
    import ray

    from replicas.names import CONTROLLER_NAME, CONTROLLER_NAMESPACE

    if not _connect():
        raise RuntimeError("no Ray cluster is running (cascade up starts one)")
    try:
        return ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
    except ValueError:
        raise RuntimeError(
            "Ray is running but no Cascade controller is (cascade up starts one)"
        ) from None


def _deployed_pools() -> list[str] | None:
    """The pool deployments of the Serve app ``APP_NAME`` (``None``: Serve is not
    running, or the app is not deployed)."""
    from ray import serve

    from orchestrator.app import INGRESS_NAME

    try:
        app = serve.status().applications.get(APP_NAME)
    except Exception:  # Serve not started on this cluster
        return None
    if app is None:
        return None
    return sorted(name for name in app.deployments if name != INGRESS_NAME)


def status_warnings(status: dict[str, Any], deployed_pools: list[str] | None) -> list[str]:
    """Why ``cascade status``'s numbers may not describe the app that serves (pure:
    unit-tested): the controller runs another config than the deployed app's
    (its pools differ from the app's pool deployments, or a router was deployed
    with another config fingerprint), no app is deployed, no replica reports, or
    the controller refused calls without its secret."""
    from orchestrator.controller_state import describe_config, short_fingerprint

    ours = describe_config(
        status.get("config_name", "?"), status.get("config_fingerprint", ""),
        status.get("pools", []),
    )  # fmt: skip
    out = []
    if deployed_pools is None:
        out.append(f"no Serve app {APP_NAME!r} is deployed; the controller runs config {ours}")
    elif sorted(status.get("pools", [])) != sorted(deployed_pools):
        out.append(
            f"the deployed app has pools {', '.join(deployed_pools) or '-'} but the controller "
            f"runs config {ours}: run `cascade up --config <file>` again"
        )
    others = {
        r.get("config_fingerprint", "")
        for r in status.get("routers", {}).values()
        if r.get("config_fingerprint", "") not in ("", status.get("config_fingerprint"))
    }
    if others:
        out.append(
            "routers of the deployed app run config fp "
            f"{', '.join(sorted(short_fingerprint(f) for f in others))} but the controller "
            f"runs config {ours}: run `cascade up --config <file>` again"
        )
    refused = status.get("refused_calls") or {}
    if refused:
        calls = ", ".join(f"{m} {n}" for m, n in sorted(refused.items()))
        out.append(
            f"the controller refused {sum(refused.values())} calls without its secret ({calls}): "
            "a caller that is not this app's (docs/deploy.md, Security), or replicas of an app "
            "deployed before `cascade down` made a new secret"
        )
    if not status.get("replicas"):
        out.append(
            "0 live replicas report to the controller: the Plan is static until they do "
            "(replicas still starting, not deployed, or of another config)"
        )
    return out


def restart_text(status: dict[str, Any]) -> str:
    """How the controller started (pure: unit-tested)."""
    restored = status.get("restored") or {}
    if restored.get("state") == "restored":
        return (
            f"restarted {status.get('restarts', 0)}x, state restored from step "
            f"{restored['checkpoint_steps']} ({restored['checkpoint_age_s']:.1f} s old)"
        )
    if restored.get("state") == "version only":
        return f"started fresh (after a controller of config {restored['from_config']!r})"
    return "started fresh"


def run_status(args: argparse.Namespace) -> int:
    import ray
    from rich.console import Console
    from rich.table import Table

    from orchestrator.controller_state import describe_config

    ctl = _controller()
    st, view, plan = ray.get(
        [ctl.status.remote(), ctl.get_view.remote(), ctl.get_plan.remote()],
        timeout=STATUS_TIMEOUT_S,
    )
    console = Console()
    ours = describe_config(st["config_name"], st["config_fingerprint"], st["pools"])
    console.print(f"controller: config {ours}, {restart_text(st)}")
    console.print(
        f"controller: {st['steps']} steps, {st['snapshots_received']} snapshots, "
        f"{len(st['replicas'])} live replicas, {st['step_errors']} step errors, "
        f"{st['checkpoints']} checkpoints ({st['checkpoint_errors']} failed)"
    )
    for warning in status_warnings(st, _deployed_pools()):
        console.print(f"[bold yellow]WARNING: {warning}[/]")
    if view is None or plan is None:
        console.print("no plan yet")
        return 0
    t = Table(title="pools")
    for col in ("pool", "replicas", "target", "running", "waiting", "KV", "ITL σ", "prefill σ",
                "saturation", "weight"):  # fmt: skip
        t.add_column(col, justify="right")
    cls = next(iter(plan.routing), None)
    for name, pv in view.pools.items():
        pp = plan.pools.get(name)
        t.add_row(
            name, str(len(pv.replicas)), str(pp.target_replicas if pp else "-"),
            str(pv.running), str(pv.waiting), f"{pv.kv_usage:.2f}",
            f"{pv.itl_sigma_s * 1e3:.1f} ms", f"{pv.prefill_sigma_s * 1e3:.1f} ms",
            f"{pp.saturation:.2f}" if pp else "-",
            f"{plan.routing[cls].get(name, 0):.2f}" if cls else "-",
        )  # fmt: skip
    console.print(t)
    lv = Table(title="latency by level (s)")
    for col in ("level", "metric", "n", "mean", "σ", "P50", "P99"):
        lv.add_column(col, justify="right")
    rows = [("cluster", m, s) for m, s in view.cluster.items()]
    rows += [(p, m, s) for p, pv in view.pools.items() for m, s in pv.metrics.items()]
    for level, m, s in rows:
        if m in ("ttft", "itl", "e2e"):
            lv.add_row(
                level, m, str(s.n), f"{s.mean:.4f}", f"{s.std:.4f}", f"{s.p50:.4f}", f"{s.p99:.4f}"
            )
    console.print(lv)
    c = view.cascade
    console.print(f"cascade model: σ_d = {c.scale:.3g}·σ_p^{c.a_prefill:.2f}·(1+kv)^{c.b_kv:.2f}"
                  f"·h^{c.c_heterogeneity:.2f}  (n_eff {c.n_eff:.0f})")  # fmt: skip
    console.print(
        f"plan v{plan.version}: {plan.status.value} ({plan.reason}); solve {plan.solve_ms:.1f} ms"
    )
    routers = Table(title="routers (what each holds of the controller's state)")
    for col in ("router", "plan", "view age", "fit of its plan", "decisions", "fallbacks"):
        routers.add_column(col, justify="right")
    for row in router_rows(st):
        routers.add_row(*row)
    console.print(routers)
    return 0


def router_rows(status: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows of the routers table from ``ControllerActor.status()``: router id,
    Plan version held, view age, whether its cascade model is the fit published
    with that Plan, decisions, fallbacks (pure: unit-tested)."""
    return [
        (
            rid,
            f"v{r['plan_version']}",
            f"{r['view_age_s']:.2f} s",
            "yes" if r["fit_matches_plan"] else "no",
            str(r["decisions"]),
            str(r["fallbacks"]),
        )
        for rid, r in sorted(status.get("routers", {}).items())
    ]
