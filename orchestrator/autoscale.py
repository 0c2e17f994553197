"""Serve custom autoscaling policy: replica counts follow the controller's Plan.

``AutoscalingConfig(policy=AutoscalingPolicy(policy_function=
"orchestrator.autoscale:plan_policy"))`` on each pool deployment. The policy asks
the controller actor for its per-pool targets (short timeout); if the controller
does not answer it keeps the current count. Serve clips the result to the
deployment's min/max, and a scale-down drains: Serve stops routing to a replica
it removes and waits for its ongoing requests (``graceful_shutdown_timeout_s``).
"""

from __future__ import annotations

from typing import Any

from replicas.names import CONTROLLER_NAME, CONTROLLER_NAMESPACE

_TIMEOUT_S = 0.5


def plan_policy(ctx: Any) -> tuple[int, dict[str, Any]]:
    """Target replicas for ``ctx.deployment_name`` from the Plan."""
    import ray

    state = dict(ctx.policy_state or {})
    current = int(ctx.current_num_replicas)
    try:
        actor = ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
        ref: Any = actor.get_targets.remote()
        targets: dict[str, int] = ray.get(ref, timeout=_TIMEOUT_S)
        target = int(targets.get(ctx.deployment_name, current))
        state["source"] = "plan"
    except Exception:
        target = current
        state["source"] = "hold: controller unavailable"
    lo = int(getattr(ctx, "capacity_adjusted_min_replicas", 0))
    hi = int(getattr(ctx, "capacity_adjusted_max_replicas", max(target, 1)))
    return min(max(target, lo), hi), state
