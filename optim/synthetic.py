"""Plausible synthetic instances for benchmarks and examples (seeded, no I/O).

The numbers follow a simple continuous-batching picture: a replica decodes at
``tpot_s`` per token for ``concurrency = capacity_tokens_per_s · tpot_s`` sequences
at once, prefill runs ``PREFILL_SPEEDUP``× faster per token, a sequence holds its
prompt plus half its output in 16-token KV blocks. They are for exercising the
optimizer at scale, not a calibration: fit real inputs from telemetry.
"""

from __future__ import annotations

import numpy as np

from optim.checks import FloatArray
from optim.inputs import ProblemInputs
from optim.specs import ClassSpec, Interconnect, PoolSpec

PREFILL_SPEEDUP = 20.0
BLOCK_TOKENS = 16

# (gpu_type, tp_size, tokens/s per replica, KV blocks per replica, interconnect, $/GPU-h)
_POOL_KINDS: tuple[tuple[str, int, float, int, Interconnect, float], ...] = (
    ("H100", 1, 3000.0, 4000, "nvlink", 4.0),
    ("A100", 2, 2400.0, 7000, "nvlink", 2.5),
    ("A100", 1, 1500.0, 3000, "nvlink", 2.5),
    ("H100", 2, 5000.0, 9000, "pcie", 4.0),
)


def synthetic_specs(
    num_pools: int, num_classes: int, rng: np.random.Generator
) -> tuple[tuple[PoolSpec, ...], tuple[ClassSpec, ...]]:
    """``num_pools`` pools cycling through four GPU kinds, and ``num_classes`` length buckets.

    Raises:
        ValueError: if a count is < 1.
    """
    if num_pools < 1 or num_classes < 1:
        raise ValueError(f"need >= 1 pool and class, got {num_pools}, {num_classes}")
    pools = []
    for i in range(num_pools):
        gpu, tp, cap, kv, link, price = _POOL_KINDS[i % len(_POOL_KINDS)]
        jitter = float(rng.uniform(0.85, 1.15))
        pools.append(
            PoolSpec(
                name=f"pool-{i}",
                gpu_type=gpu,
                tp_size=tp,
                min_replicas=1,
                max_replicas=8,
                capacity_tokens_per_s=cap * jitter,
                kv_blocks=int(kv * jitter),
                interconnect=link,
                gpu_cost_per_hour=price,
            )
        )
    classes = []
    for j in range(num_classes):
        frac = j / max(num_classes - 1, 1)
        prompt = float(128 * 32**frac)  # 128 .. 4096 tokens
        output = float(32 * 16 ** ((j * 7 % num_classes) / max(num_classes - 1, 1)))
        classes.append(
            ClassSpec(
                name=f"class-{j}",
                slo_s=1.0,
                quantile=0.99,
                tail_factor=3.0,
                prompt_tokens=prompt,
                output_tokens=output,
            )
        )
    return tuple(pools), tuple(classes)


def nominal_service(
    pools: tuple[PoolSpec, ...], classes: tuple[ClassSpec, ...]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Zero-load latency (s), demand (replica-s) and KV block-seconds, each (C, P)."""
    cap = np.array([p.capacity_tokens_per_s for p in pools])
    tpot = 0.015 * 3000.0 / cap
    concurrency = cap * tpot
    prompt = np.array([c.prompt_tokens for c in classes])[:, None]
    output = np.array([c.output_tokens for c in classes])[:, None]
    latency = prompt / (PREFILL_SPEEDUP * cap[None, :]) + output * tpot[None, :]
    demand = latency / concurrency[None, :]
    blocks = np.ceil((prompt + output / 2) / BLOCK_TOKENS)
    return latency, demand, blocks * latency


def synthetic_inputs(
    pools: tuple[PoolSpec, ...],
    classes: tuple[ClassSpec, ...],
    rng: np.random.Generator,
    *,
    load: float = 0.5,
    replicas: int = 3,
) -> ProblemInputs:
    """Inputs whose capacity-proportional routing runs the cluster at ``load`` utilization.

    Class SLOs in ``classes`` are ignored: the caller should use the returned
    classes from :func:`feasible_classes` so that the instance is feasible.
    """
    c_n, p_n = len(classes), len(pools)
    latency, demand, kv_block_s = nominal_service(pools, classes)
    n = np.full(p_n, float(replicas))
    weights = rng.dirichlet(np.ones(c_n) * 2.0)
    # Requests/s one replica of each pool sustains on the class mix, summed over replicas.
    capacity = float((n / (weights[:, None] * demand).sum(axis=0)).sum())
    total_rate = load * capacity
    tp = np.array([p.tp_size for p in pools], dtype=np.float64)
    mean_latency = latency.mean(axis=0)
    return ProblemInputs(
        arrival_rate_per_s=weights * total_rate,
        replicas=n,
        service_time_s=latency,
        service_std_s=0.1 * latency,
        demand_s=demand,
        kv_block_s=kv_block_s,
        gpu_var_s2=(0.05 * mean_latency) ** 2,
        kv_var_s2=(0.08 * mean_latency) ** 2,
        net_var_s2=np.where(tp > 1, (0.02 * mean_latency) ** 2, 0.0),
        queue_delay_s=0.05 * mean_latency,
        preempt_delay_s=0.05 * mean_latency,
        hetero_var_s2=(0.02 * latency) ** 2 * rng.uniform(0.5, 1.5, size=(c_n, p_n)),
        w_gpu=1.0,
        w_mem=1.0,
        w_net=1.0,
        rho_max=0.9,
        kv_max=0.95,
    )


def feasible_classes(
    classes: tuple[ClassSpec, ...], inputs: ProblemInputs, *, headroom: float = 2.0
) -> tuple[ClassSpec, ...]:
    """Classes with SLOs set to ``headroom`` × their best zero-load tail latency."""
    kappa = np.array([c.kappa for c in classes])[:, None]
    best = (inputs.service_time_s + kappa * inputs.service_std_s).min(axis=1)
    return tuple(
        ClassSpec(
            name=c.name,
            slo_s=float(headroom * b),
            quantile=c.quantile,
            tail_factor=c.tail_factor,
            prompt_tokens=c.prompt_tokens,
            output_tokens=c.output_tokens,
        )
        for c, b in zip(classes, best, strict=True)
    )


def perturb_rates(inputs: ProblemInputs, rng: np.random.Generator, rel: float) -> ProblemInputs:
    """A copy with each arrival rate multiplied by ``1 + U(-rel, rel)`` (fresh telemetry)."""
    factor = 1.0 + rng.uniform(-rel, rel, size=inputs.num_classes)
    return inputs.replace(arrival_rate_per_s=inputs.arrival_rate_per_s * factor)
