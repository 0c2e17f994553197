"""Static descriptions of pools and request classes (what the config file says).

Everything here changes only when the deployment changes; everything the
controller re-estimates from telemetry between solves lives in
:class:`optim.inputs.ProblemInputs`. A :class:`optim.routing.RoutingProblem` is
compiled once for a fixed tuple of pools and classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from optim.tail import cantelli_kappa

Interconnect = Literal["nvlink", "pcie", "cross_node"]
INTERCONNECTS: tuple[Interconnect, ...] = ("nvlink", "pcie", "cross_node")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


@dataclass(frozen=True)
class PoolSpec:
    """One pool of identical replicas (one Serve deployment, one GPU type).

    Attributes:
        name: unique pool name (the Serve deployment, e.g. ``"llm-h100"``).
        gpu_type: accelerator type (``"H100"``); GPU budgets are per type.
        tp_size: tensor-parallel degree = GPUs per replica (>= 1).
        min_replicas, max_replicas: bounds the allocator respects (0 <= min <= max).
        capacity_tokens_per_s: nominal tokens/s one replica sustains (> 0); used
            only to derive nominal demands (:func:`optim.synthetic.nominal_demand_s`).
        kv_blocks: usable KV-cache blocks per replica (> 0).
        interconnect: how the replica's TP ranks talk: ``"nvlink"`` (same node,
            NVLink/NVSwitch), ``"pcie"`` (same node, no NVLink between the ranks)
            or ``"cross_node"``. Irrelevant when ``tp_size == 1``.
        gpu_cost_per_hour: price of one GPU of this type ($/GPU-hour, >= 0).

    Raises:
        ValueError: naming the field, for a zero-capacity pool, inverted bounds,
            an unknown interconnect, or a non-finite number.
    """

    name: str
    gpu_type: str
    tp_size: int
    min_replicas: int
    max_replicas: int
    capacity_tokens_per_s: float
    kv_blocks: int
    interconnect: Interconnect = "nvlink"
    gpu_cost_per_hour: float = 0.0

    def __post_init__(self) -> None:
        where = f"pool {self.name!r}"
        _require(bool(self.name), "pool name must be non-empty")
        _require(self.tp_size >= 1, f"{where}: tp_size must be >= 1, got {self.tp_size}")
        _require(
            0 <= self.min_replicas <= self.max_replicas,
            f"{where}: need 0 <= min_replicas <= max_replicas, "
            f"got {self.min_replicas}, {self.max_replicas}",
        )
        _require(
            _finite_positive(self.capacity_tokens_per_s),
            f"{where}: capacity_tokens_per_s must be finite and > 0, "
            f"got {self.capacity_tokens_per_s}",
        )
        _require(self.kv_blocks > 0, f"{where}: kv_blocks must be > 0, got {self.kv_blocks}")
        _require(
            self.interconnect in INTERCONNECTS,
            f"{where}: interconnect must be one of {INTERCONNECTS}, got {self.interconnect!r}",
        )
        _require(
            math.isfinite(self.gpu_cost_per_hour) and self.gpu_cost_per_hour >= 0,
            f"{where}: gpu_cost_per_hour must be finite and >= 0, got {self.gpu_cost_per_hour}",
        )

    @property
    def replica_cost_per_hour(self) -> float:
        """$/hour of one replica (``tp_size`` GPUs)."""
        return self.tp_size * self.gpu_cost_per_hour


@dataclass(frozen=True)
class ClassSpec:
    """One request class: a (prompt, output) length bucket with its latency SLO.

    Attributes:
        name: unique class name (``"short-chat"``).
        slo_s: end-to-end latency objective in seconds (> 0).
        quantile: the SLO holds for this fraction of requests, in (0, 1) (0.99 = P99).
        tail_factor: κ in ``mean + κ·σ <= slo_s``. ``None`` (default) uses Cantelli's
            distribution-free bound ``κ = sqrt(q / (1 - q))``; pass a fitted quantile
            factor (e.g. 2.33 for a Gaussian P99) when the latency shape is known.
        prompt_tokens, output_tokens: bucket means, used only to derive nominal
            demands (:mod:`optim.synthetic`).

    Raises:
        ValueError: naming the field, for a non-positive SLO, a quantile outside
            (0, 1), or a negative/non-finite tail factor.
    """

    name: str
    slo_s: float
    quantile: float = 0.99
    tail_factor: float | None = None
    prompt_tokens: float = 1.0
    output_tokens: float = 1.0

    def __post_init__(self) -> None:
        where = f"class {self.name!r}"
        _require(bool(self.name), "class name must be non-empty")
        _require(
            _finite_positive(self.slo_s), f"{where}: slo_s must be finite and > 0, got {self.slo_s}"
        )
        _require(
            0.0 < self.quantile < 1.0, f"{where}: quantile must be in (0, 1), got {self.quantile}"
        )
        if self.tail_factor is not None:
            _require(
                math.isfinite(self.tail_factor) and self.tail_factor >= 0,
                f"{where}: tail_factor must be finite and >= 0, got {self.tail_factor}",
            )
        _require(
            math.isfinite(self.prompt_tokens) and self.prompt_tokens >= 0,
            f"{where}: prompt_tokens must be finite and >= 0, got {self.prompt_tokens}",
        )
        _require(
            _finite_positive(self.output_tokens),
            f"{where}: output_tokens must be finite and > 0, got {self.output_tokens}",
        )

    @property
    def kappa(self) -> float:
        """κ for this class (the fitted factor, or Cantelli's bound)."""
        return self.tail_factor if self.tail_factor is not None else cantelli_kappa(self.quantile)


def check_unique_names(pools: tuple[PoolSpec, ...], classes: tuple[ClassSpec, ...]) -> None:
    """Refuse empty or duplicated pool/class names (the plan is keyed by name)."""
    _require(len(pools) > 0, "need at least one pool")
    _require(len(classes) > 0, "need at least one class")
    for kind, names in (("pool", [p.name for p in pools]), ("class", [c.name for c in classes])):
        seen: set[str] = set()
        for i, name in enumerate(names):
            _require(name not in seen, f"{kind} name {name!r} at index {i} is duplicated")
            seen.add(name)
