"""Cascade's full decision stack for the simulator, built from the config file.

The ``cascade`` policy in ``cascade simulate`` is more than a router: it runs the
controller core (``orchestrator.controller.Controller``: merges, cascade fit,
backpressure, optimizer → Plan with per-pool routing weights) and the configured
admission policy behind the backpressure gate, exactly as the Ray ingress does
(``orchestrator.ingress_core``). Baselines run without either, as they would on
a plain Ray Serve deployment.
"""

from __future__ import annotations

from typing import Any

from orchestrator.config import CascadeConfig
from orchestrator.controller import Controller
from orchestrator.ingress_core import plan_pressure
from policies import build_policies
from replicas.telemetry import RequestInfo

STACK_POLICIES = frozenset({"cascade"})


class PlanAdmission:
    """``admit(request, view, now_s) -> bool`` for the simulator: the Plan's
    backpressure gate for the chosen pool, then the configured admission."""

    def __init__(self, config: CascadeConfig, controller: Controller) -> None:
        self.admission = build_policies(config.policy_config()).admission
        self.controller = controller

    def admit(self, request: RequestInfo, view: Any, now_s: float) -> bool:
        plan = self.controller.plan
        pressure = None
        pools = set(getattr(view, "pools", ()) or ())
        if plan is not None and len(pools) == 1:
            pool = next(iter(pools))
            pp = plan.pools.get(pool)
            if pp is not None:
                if pp.saturation >= 1.0:
                    return False  # backpressure holds new prefills on this pool
                pressure = plan_pressure(pp, pool, now_s)
        return bool(self.admission.decide(request, view, now_s, pressure).admit)


def stack_for(
    policy: str, config: CascadeConfig | None
) -> tuple[Controller | None, PlanAdmission | None]:
    """(controller, admission) for ``policy``: both for Cascade's stack, none for
    baselines or when no config file is in use."""
    if config is None or policy not in STACK_POLICIES:
        return None, None
    controller = Controller(config)
    return controller, PlanAdmission(config, controller)
