"""Cascade's full decision stack for the simulator, built from the config file.

The ``cascade`` policy in ``cascade simulate`` is more than a router: it runs the
controller core (``orchestrator.controller.Controller``: merges, cascade fit,
per-class traffic, backpressure, optimizer → Plan) and the ``Gateway``
(``orchestrator.gateway``: class → pool split → hold / spill → admission →
replica ranking) of the config file, exactly the objects the Ray controller
actor, ingress and routers run, here on the simulator's virtual clock. The
gateway predicts with the controller's fitted cascade model (the same object)
and reports its per-class arrivals to the controller before every step, as the
Ray ingress does every second. Baselines run without either, as they would on a
plain Ray Serve deployment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.config import CascadeConfig
from orchestrator.contracts import Plan
from orchestrator.controller import Controller
from orchestrator.gateway import Gateway
from replicas.telemetry import ReplicaSnapshot

STACK_POLICIES = frozenset({"cascade"})


@dataclass
class CascadeStack:
    """The controller core and the gateway of one deployment (see module doc)."""

    controller: Controller
    gateway: Gateway

    def tick(self, now_s: float, snapshots: Sequence[ReplicaSnapshot]) -> Plan:
        """One controller period: arrivals in, a step, the Plan and fit out."""
        counts, period_s = self.gateway.take_arrivals()
        self.controller.report_arrivals(counts, period_s, now_s)
        # output lengths: the gateway's delta in, the merged model back (a copy:
        # the gateway goes on learning locally until the next tick)
        self.controller.report_completions(self.gateway.predictor.take_completions())
        self.gateway.predictor.set_length_model(self.controller.lengths.copy())
        plan = self.controller.step(now_s, snapshots)
        self.gateway.set_plan(plan)
        if self.gateway.cascade is not self.controller.cascade:
            self.gateway.set_cascade_model(self.controller.cascade)
        return plan


StackBuilder = Callable[[np.random.Generator, Callable[[], float]], CascadeStack]


def build_stack(
    config: CascadeConfig, rng: np.random.Generator, clock: Callable[[], float]
) -> CascadeStack:
    """Controller + gateway of ``config``, the gateway on ``rng`` and ``clock``."""
    controller = Controller(config)
    gateway = Gateway.from_config(config, rng=rng, clock=clock)
    gateway.set_cascade_model(controller.cascade)
    return CascadeStack(controller, gateway)


def stack_for(policy: str, config: CascadeConfig | None) -> StackBuilder | None:
    """How to build ``policy``'s stack: Cascade's for ``cascade`` with a config
    file; None for baselines or without a config (router only)."""
    if config is None or policy not in STACK_POLICIES:
        return None
    return lambda rng, clock: build_stack(config, rng, clock)
