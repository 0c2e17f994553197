"""What the controller publishes: ``ClusterView`` (what it knows) and ``Plan``
(what it decided). Frozen; routers and the ingress poll the latest of each and
never block a request on the controller.

Units: seconds, requests/s, fractions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optim.results import SolveStatus as SolveStatus  # re-exported: Plan.status
from replicas.telemetry import ReplicaSnapshot
from uncertainty import CascadeCoefficients


@dataclass(frozen=True, slots=True)
class LevelStats:
    """Merged statistics of one metric at one hierarchy level (seconds)."""

    n: int
    mean: float
    std: float
    p50: float
    p90: float
    p99: float


@dataclass(frozen=True, slots=True)
class PoolView:
    """One pool as the controller sees it."""

    name: str
    replicas: tuple[str, ...]
    running: int
    waiting: int
    kv_usage: float  # mean fraction of KV blocks in use across replicas
    itl_sigma_s: float  # recent decode ITL σ (mean of the replicas' decayed σ)
    prefill_sigma_s: float
    arrival_rate_per_s: float  # completions/s estimated from snapshot deltas
    metrics: Mapping[str, LevelStats] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The latest merged picture (replica → pool → cluster) and the cascade fit."""

    time_s: float
    pools: Mapping[str, PoolView]
    cluster: Mapping[str, LevelStats]
    cascade: CascadeCoefficients
    stale_replicas: tuple[str, ...] = ()  # snapshots older than the staleness bound


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """Per-pool decisions."""

    admission_token_budget: int  # prefill tokens/s admitted to new requests
    saturation: float  # backpressure saturation; >= 1 means hold new prefills
    target_replicas: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Routing weights per request class and pool, admission and replica targets.

    ``routing[class][pool]`` are fractions summing to 1 over pools for each class.
    ``status``: how the routing was obtained (``optim.SolveStatus``: a failed or
    infeasible solve carries the optimizer's fallback routing; ``STATIC`` when no
    solve ran).
    """

    time_s: float
    version: int
    routing: Mapping[str, Mapping[str, float]]
    pools: Mapping[str, PoolPlan]
    status: SolveStatus
    solve_ms: float = 0.0
    reason: str = ""

    def __post_init__(self) -> None:
        for cls, weights in self.routing.items():
            total = sum(weights.values())
            if weights and not math.isclose(total, 1.0, rel_tol=0, abs_tol=1e-6):
                raise ValueError(f"plan.routing[{cls!r}] sums to {total}, not 1")
            if any(w < 0 or not math.isfinite(w) for w in weights.values()):
                raise ValueError(f"plan.routing[{cls!r}] has a negative or non-finite weight")


@dataclass(frozen=True, slots=True)
class RouterSync:
    """What a request router pulls from the controller in one background call
    (``ControllerActor.sync``): the latest replica snapshots, the Plan,
    and the fitted cascade model's state (``CascadeModel.to_dict()``), so the
    router's ``uncertainty`` scorer predicts with the controller's fit rather
    than its prior. ``time_s``: when the controller answered (wall clock)."""

    time_s: float
    snapshots: tuple[ReplicaSnapshot, ...]
    plan: Plan | None
    cascade: Mapping[str, Any] | None
    # the controller's output-length model (Controller.lengths_state: to_dict() + version)
    lengths: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RouterReport:
    """What a router tells the controller about itself on each sync (shown by
    ``cascade status``; lets tests and operators see that the Plan and the fit
    reached it). Counts are cumulative since the router started."""

    plan_version: int  # version of the Plan it holds (0: none yet)
    cascade_theta: tuple[float, ...]  # θ of the cascade model its scorer uses
    decisions: int
    fallbacks: int  # decisions where the policy failed and least-outstanding ranked
    routed: Mapping[str, int]  # replica id → requests Serve sent there on its ranking
    view_age_s: float  # age of its snapshots when it reported (inf: none yet)
    config_fingerprint: str = ""  # the config it was deployed with ("" : not known)
