"""``cascade up | status | load | down``: run Cascade on a local Ray cluster.

``up`` starts a local Ray head (``ray start``, with one custom resource per
pool accelerator so each pool's replicas can be placed) unless one is running,
deploys the app from the config and returns once it is ready, printing the
OpenAI base URL; a controller left running with another config is replaced, and
``up`` says so, naming both configs. ``status`` prints the controller's config
(name and fingerprint), pools, replicas, σ per level and the Plan, with a warning
when the controller's config is not the deployed app's or no replica reports.
``load`` replays a trace through the HTTP API (streaming, progress bar) and
prints a latency table. ``down`` shuts the app, the controller and Ray down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

APP_NAME = "cascade"


def add_up_arguments(up: argparse.ArgumentParser) -> None:
    up.add_argument("--config", default=None, help="Cascade YAML (default: examples/default.yaml)")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--num-cpus", type=int, default=8, help="logical CPUs for a new Ray head")
    up.add_argument("--time-scale", type=float, default=1.0, help="SimEngine speed (sim only)")
    up.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for readiness")


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def add_load_arguments(load: argparse.ArgumentParser) -> None:
    load.add_argument("--trace", required=True, help="path or short name (azure-conv, ...)")
    load.add_argument("--url", default="http://127.0.0.1:8000/v1")
    load.add_argument("--model", default=None, help="model id (default: the server's first)")
    load.add_argument("--duration", type=float, default=60.0, help="seconds of trace to replay")
    load.add_argument("--rate", type=float, default=None, help="time-scale arrivals to req/s")
    load.add_argument("--prompt-scale", type=float, default=1.0)
    load.add_argument("--output-scale", type=float, default=1.0)
    load.add_argument("--max-requests", type=int, default=2000)
    load.add_argument("--json", action="store_true", help="print one JSON object")
    load.add_argument("--plot", default=None, metavar="DIR", help="write PNG plots to DIR")


def add_down_arguments(parser: argparse.ArgumentParser) -> None:
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
    if start_ray_head(cfg, args.num_cpus):
        console.print(f"[cascade up] started a local Ray head ({args.num_cpus} logical CPUs)")
    from ray import serve

    from orchestrator.app import build_app
    from orchestrator.controller_actor import ensure_controller

    # before the app: a controller left by another config (a running app, or a
    # crashed session on a Ray cluster that outlived it) is replaced, and said so
    started = ensure_controller(cfg)
    if started.message:
        console.print(f"[bold yellow][cascade up] {started.message}[/]")
    else:
        console.print(f"[cascade up] controller {started.action}: config {_config_text(cfg)}")
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    console.print(f"[cascade up] deploying {len(cfg.pools)} pools ({cfg.model.engine} engine)")
    t0 = time.time()
    app = build_app({"config": cfg.model_dump(mode="json"), "time_scale": args.time_scale})
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    wait_app_ready(APP_NAME, args.timeout)
    print(f"http://127.0.0.1:{args.port}/v1")
    console.print(f"[cascade up] ready in {time.time() - t0:.0f} s; model {cfg.model.name!r}")
    return 0


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
    with another config fingerprint), no app is deployed, or no replica reports."""
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


# ---- load --------------------------------------------------------------------------------
def run_load(args: argparse.Namespace) -> int:
    import urllib.request

    import numpy as np
    from rich.console import Console
    from rich.progress import Progress

    from orchestrator.loadgen import replay, report
    from orchestrator.traces import load_trace

    if not (args.duration > 0):
        raise ValueError(f"--duration must be > 0, got {args.duration}")
    base = args.url.rstrip("/")
    model = args.model
    if model is None:
        with urllib.request.urlopen(f"{base}/models", timeout=30) as r:
            model = json.loads(r.read())["data"][0]["id"]
    trace = load_trace(args.trace, rng=np.random.default_rng(0))
    if args.rate is not None:
        trace = trace.scaled_to_rate(args.rate)
    trace = trace.head(args.max_requests, duration_s=args.duration)
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task(f"replaying {len(trace)} requests", total=len(trace))
        records = asyncio.run(
            replay(
                trace,
                base,
                model,
                prompt_scale=args.prompt_scale,
                output_scale=args.output_scale,
                progress=lambda d, n: prog.update(task, completed=d),
            )
        )
    out = report(records)
    if args.plot:
        for path in plot_load(records, Path(args.plot)):
            console.print(f"wrote {path}")
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print_report(out)
    return 0 if out["completed"] else 1


def print_report(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{out['completed']}/{out['requests']} requests completed, "
                    f"{out['errors']} errors, {out['rejected_429']} deferred (429)")  # fmt: skip
    for col in ("metric", "P50", "P90", "P99"):
        t.add_column(col, justify="right")
    for m in ("ttft", "tpot", "e2e"):
        vals = [out.get(f"{m}_p{q}_s") for q in (50, 90, 99)]
        t.add_row(m.upper(), *("-" if v is None else f"{v:.3f} s" for v in vals))
    Console().print(t)
    cv = out.get("p99_window_cv")
    cv_text = "-" if cv is None else f"{cv:.3f}"
    Console().print(
        f"σ(P99)/mean(P99) over {out.get('p99_windows')} windows: {cv_text}; "
        f"SLO attainment {out.get('slo_attainment', 0):.3f}; "
        f"{out.get('tokens_per_s', 0):.0f} tokens/s"
    )


def plot_load(records: list[Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in records if r.chunks]
    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (name, vals) in zip(axes, (
        ("TTFT", [r.ttft_s for r in ok]), ("ITL", [x for r in ok for x in r.itls]),
        ("E2E", [r.e2e_s for r in ok]),
    ), strict=True):  # fmt: skip
        x = np.sort(np.asarray(vals))
        if x.size:
            ax.plot(x, np.arange(1, x.size + 1) / x.size)
            ax.axvline(np.percentile(x, 99), ls="--", c="r", lw=1, label="P99")
        ax.set_title(f"{name} CDF")
        ax.set_xlabel("seconds")
        ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "load_latency_cdf.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.scatter([r.sent_s for r in ok], [r.e2e_s for r in ok], s=6)
    ax.set_xlabel("request sent at (s)")
    ax.set_ylabel("E2E latency (s)")
    ax.set_title("E2E latency over the replay")
    fig.tight_layout()
    paths.append(out_dir / "load_e2e_over_time.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


# ---- down --------------------------------------------------------------------------------
def run_down(args: argparse.Namespace) -> int:
    import ray

    from replicas.names import CONTROLLER_NAME, CONTROLLER_NAMESPACE

    if _connect():
        from ray import serve

        try:
            serve.shutdown()
        finally:
            with contextlib.suppress(ValueError):  # no controller: nothing to kill
                ray.kill(ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE))
            # its checkpoint is this session's: a later session must not find it
            from ray.experimental import internal_kv

            from orchestrator.controller_state import CHECKPOINT_KEY

            with contextlib.suppress(Exception):
                internal_kv._internal_kv_del(CHECKPOINT_KEY, namespace=CONTROLLER_NAMESPACE)
            ray.shutdown()
    subprocess.run([_ray_cli(), "stop", "--force"], check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    print("[cascade down] stopped", file=sys.stderr)
    return 0
