"""``cascade down``: shut the app, the controller and the local Ray cluster down,
saying what it changes (re-exported by ``orchestrator.serve_cli``).

In order: the Serve applications (named), the controller actor (its config), its
checkpoint and the cluster's controller secret in Ray's internal KV, then
``ray stop --force`` and any vLLM engine processes that outlived their replicas.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from typing import Any


def add_down_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _say(text: str) -> None:
    print(f"[cascade down] {text}", file=sys.stderr)


def _controller_text(actor: Any) -> str:
    import ray

    from orchestrator.controller_state import describe_config

    try:
        info: Any = ray.get(actor.config_info.remote(), timeout=5.0)
        return f"of config {describe_config(info['name'], info['fingerprint'], info['pools'])}"
    except Exception:  # stuck or from another build: killed all the same
        return "(it did not report its config)"


def _shut_cluster_state() -> None:
    """Serve apps, controller, checkpoint and secret of the connected cluster."""
    import ray
    from ray import serve
    from ray.experimental import internal_kv

    from orchestrator.controller_start import SECRET_KEY
    from orchestrator.controller_state import CHECKPOINT_KEY
    from replicas.names import CONTROLLER_NAME, CONTROLLER_NAMESPACE

    apps: list[str] = []
    with contextlib.suppress(Exception):  # Serve not running: nothing to delete
        apps = sorted(serve.status().applications)
    try:
        serve.shutdown()  # type: ignore[no-untyped-call]
        if apps:
            _say(f"deleted Serve applications: {', '.join(apps)}; Serve shut down")
    finally:
        actor: Any
        try:
            actor = ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
        except ValueError:
            actor = None
        if actor is not None:
            text = _controller_text(actor)
            ray.kill(actor)
            _say(f"killed the controller {CONTROLLER_NAMESPACE}/{CONTROLLER_NAME} {text}")
        # both are this session's: a later session must not find them
        removed = []
        for key, what in ((CHECKPOINT_KEY, "its checkpoint"),
                          (SECRET_KEY, "the cluster's controller secret")):  # fmt: skip
            with contextlib.suppress(Exception):
                if internal_kv._internal_kv_del(key, namespace=CONTROLLER_NAMESPACE):
                    removed.append(what)
        if removed:
            _say(f"removed from Ray's internal KV: {' and '.join(removed)}")
        ray.shutdown()


def run_down(args: argparse.Namespace) -> int:
    from orchestrator.serve_cli import _connect, _ray_cli

    if _connect():
        _shut_cluster_state()
    else:
        _say("no local Ray cluster to connect to")
    subprocess.run([_ray_cli(), "stop", "--force"], check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    reaped = reap_orphaned_engines()
    note = f"; killed {reaped} orphaned vLLM engine processes" if reaped else ""
    _say(f"stopped the local Ray processes (ray stop --force){note}")
    return 0


def reap_orphaned_engines() -> int:
    """Kill vLLM engine processes (``VLLM::EngineCore``, ``VLLM::Worker``) whose
    parent is gone. ``ray stop --force`` kills the replica actors but not the
    engine processes they spawned: those are re-parented to init and keep their
    KV-cache reservation (10 % of RAM each on CPU), so a few up/down cycles
    exhausted this 24 GiB host and the next engines failed to start. An engine
    whose parent still runs (another program's vLLM) is left alone. Returns the
    number killed."""
    import psutil

    killed = 0
    for proc in psutil.process_iter(["cmdline", "ppid"]):
        cmd = proc.info.get("cmdline") or []
        if not cmd or not cmd[0].startswith("VLLM::"):
            continue
        ppid = proc.info.get("ppid")
        if ppid not in (0, 1) and psutil.pid_exists(ppid or 0):
            continue
        with contextlib.suppress(psutil.Error):
            proc.kill()
            killed += 1
    return killed
