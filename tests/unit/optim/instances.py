"""Small hand-made optimizer instances shared by the optim unit tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from optim import ClassSpec, PoolSpec, ProblemInputs


def pools(
    count: int = 2, *, kv_blocks: tuple[int, ...] | None = None, **kw: Any
) -> tuple[PoolSpec, ...]:
    """``count`` identical pools (override per-pool KV blocks with ``kv_blocks``)."""
    blocks = kv_blocks or (4000,) * count
    base = dict(
        gpu_type="H100",
        tp_size=1,
        min_replicas=1,
        max_replicas=4,
        capacity_tokens_per_s=3000.0,
        gpu_cost_per_hour=4.0,
    )
    base.update(kw)
    return tuple(PoolSpec(name=f"p{i}", kv_blocks=blocks[i], **base) for i in range(count))


def classes(
    count: int = 1, *, slo_s: float = 5.0, tail_factor: float | None = 3.0
) -> tuple[ClassSpec, ...]:
    return tuple(
        ClassSpec(name=f"c{i}", slo_s=slo_s, tail_factor=tail_factor) for i in range(count)
    )


def inputs(num_classes: int = 1, num_pools: int = 2, **overrides: Any) -> ProblemInputs:
    """Symmetric inputs: total load 0.5 replica, 0.25 of one replica's KV, generous SLOs.

    Per-pool arrays broadcast from scalars; ``overrides`` replace any field.
    """
    c, p = num_classes, num_pools
    fields: dict[str, Any] = dict(
        arrival_rate_per_s=np.full(c, 10.0 / c),
        replicas=np.ones(p),
        service_time_s=np.full((c, p), 0.5),
        service_std_s=np.full((c, p), 0.05),
        demand_s=np.full((c, p), 0.05),
        kv_block_s=np.full((c, p), 100.0),
        gpu_var_s2=np.full(p, 1e-3),
        kv_var_s2=np.full(p, 1e-3),
        net_var_s2=np.zeros(p),
        queue_delay_s=np.full(p, 0.05),
        preempt_delay_s=np.full(p, 0.05),
    )
    fields.update(overrides)
    return ProblemInputs(**fields)
