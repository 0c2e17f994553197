"""``cascade pin POOL REPLICAS|auto``: pin a pool's replica target on the running
controller (an operator override of the allocator, e.g. for maintenance), or
hand it back with ``auto``; prints the change (before -> after) and the pins now.

``pin`` is one of the controller's mutating calls: it passes the cluster's
controller secret (``orchestrator.controller_start.cluster_secret``), which only
Cascade's tools and actors read.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pool", help="pool name (as in the config)")
    parser.add_argument("replicas", help="replica count within the pool's min/max, or 'auto'")


def _count(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"replicas must be a whole number or 'auto', got {text!r}") from None


def pin_change(pool: str, before: dict[str, int], after: dict[str, int], target: Any) -> str:
    """The line ``cascade pin`` prints (pure: unit-tested). ``before``/``after``:
    the pins; ``target``: the pool's target replicas before the change (or None)."""
    was = (f"pinned to {before[pool]}" if pool in before
           else f"the allocator's, target {target if target is not None else '?'}")  # fmt: skip
    now = f"pinned to {after[pool]} replicas" if pool in after else "back to the allocator"
    pins = ", ".join(f"{p}={n}" for p, n in sorted(after.items())) or "none"
    return f"pool {pool}: {now} (was: {was}); pins now: {pins}"


def run(args: argparse.Namespace) -> int:
    import ray

    from orchestrator.controller_start import cluster_secret
    from orchestrator.serve_cli import STATUS_TIMEOUT_S, _controller

    replicas = _count(args.replicas)
    ctl = _controller()
    secret = cluster_secret(create=False)
    if secret is None:
        raise RuntimeError("this Ray cluster has no Cascade controller secret (up makes one)")
    wait = STATUS_TIMEOUT_S
    status, targets = ray.get([ctl.status.remote(), ctl.get_targets.remote()], timeout=wait)
    try:
        after = ray.get(ctl.pin.remote(args.pool, replicas, secret=secret), timeout=wait)
    except ray.exceptions.RayTaskError as exc:  # an unknown pool, a count out of bounds
        raise ValueError(str(exc.cause)) from None
    line = pin_change(args.pool, dict(status["pinned"]), dict(after), targets.get(args.pool))
    print(f"[cascade pin] {line}", file=sys.stderr)
    return 0
