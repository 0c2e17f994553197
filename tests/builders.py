"""Builders of contract objects for tests: snapshots and requests, in one place.

``snapshot``: a replica snapshot with decayed read-outs only (what routers and
policies read), every field a keyword with a default. ``measured_snapshot``: one
with mergeable summaries drawn from lognormal latencies around an ITL (what the
controller merges and the exporters export). ``request``: a ``RequestInfo``.
``replica_load`` / ``random_load``: a prediction's ``ReplicaLoad``, given or random;
``fitted_cascade_model``: a cascade model fitted away from its prior.
The fakes of parts that cannot run here (NVML) are in ``tests.fakes``.
"""

from __future__ import annotations

import numpy as np

from replicas.telemetry import BatchComposition, DecayedStats, ReplicaSnapshot, RequestInfo
from uncertainty import CascadeModel, ReplicaLoad, Summary


def snapshot(
    rid: str,
    *,
    pool: str = "h100",
    accelerator: str = "H100",
    time_s: float = 0.0,
    running: int = 0,
    waiting: int = 0,
    waiting_prefill_tokens: int = 0,
    kv_used: int = 0,
    kv_total: int = 1000,
    block_size: int = 16,
    prefill_s_per_token: float = 1e-4,
    itl: tuple[float, float] | None = (0.03, 0.004),  # (mean, std) s; None = no history
    itl_autocorr: float = 0.5,
    prefill_step: tuple[float, float] | None = (0.05, 0.01),
    heterogeneity: float = 1.2,
    cached: frozenset[int] = frozenset(),
    generated_hist: tuple[int, ...] = (),
) -> ReplicaSnapshot:
    recent: dict[str, DecayedStats] = {}
    if itl is not None:
        recent["itl"] = DecayedStats(itl[0], itl[1], 100.0, itl_autocorr)
    if prefill_step is not None:
        recent["prefill_step"] = DecayedStats(prefill_step[0], prefill_step[1], 20.0, 0.1)
    return ReplicaSnapshot(
        replica_id=rid,
        pool=pool,
        time_s=time_s,
        accelerator=accelerator,
        running=running,
        waiting=waiting,
        waiting_prefill_tokens=waiting_prefill_tokens,
        kv_blocks_used=kv_used,
        kv_blocks_total=kv_total,
        block_size=block_size,
        prefill_s_per_token=prefill_s_per_token,
        batch=BatchComposition(0, running, heterogeneity),
        recent=recent,
        cached_prefix_hashes=cached,
        generated_hist=generated_hist,
    )


def request(
    prompt: int = 512,
    max_tokens: int = 128,
    *,
    predicted: float | None = None,
    hashes: tuple[int, ...] = (),
    slo_class: str = "default",
    rid: str = "req",
) -> RequestInfo:
    return RequestInfo(
        request_id=rid,
        prompt_tokens=prompt,
        max_tokens=max_tokens,
        predicted_output_tokens=predicted,
        prefix_hashes=hashes,
        slo_class=slo_class,
    )


def measured_snapshot(
    rid: str,
    pool: str,
    t: float,
    itl_s: float,
    rng: np.random.Generator,
    *,
    itl_samples: int = 2000,
    sigma_scale: float = 0.2,
    ttft_samples: int = 0,
    kv: float = 0.3,
    running: int = 20,
    waiting: int = 2,
    completed: int = 0,
) -> ReplicaSnapshot:
    """A snapshot whose summaries hold lognormal samples around ``itl_s`` (ITL,
    step ≈ ITL, prefill step ≈ 8×, E2E ≈ 130×, and TTFT ≈ 20× when
    ``ttft_samples`` > 0), drawn from ``rng`` in that order, with recent σ of ITL,
    prefill step and step; ``kv``: fraction of 1000 KV blocks in use."""
    itl = rng.lognormal(np.log(itl_s), sigma_scale, itl_samples)
    step = itl * rng.uniform(0.9, 1.1, itl.size)
    pre = rng.lognormal(np.log(8 * itl_s), 0.3, 200)
    summaries: dict[str, Summary] = {}
    if ttft_samples:
        summaries["ttft"] = Summary().update(rng.lognormal(np.log(20 * itl_s), 0.4, ttft_samples))
    e2e = rng.lognormal(np.log(130 * itl_s), 0.3, 100)
    summaries |= {
        "itl": Summary().update(itl),
        "step": Summary().update(step),
        "prefill_step": Summary().update(pre),
        "e2e": Summary().update(e2e),
    }

    def recent(x: np.ndarray) -> DecayedStats:
        return DecayedStats(float(x.mean()), float(x.std()), float(x.size), 0.5)

    return ReplicaSnapshot(
        replica_id=rid,
        pool=pool,
        time_s=t,
        running=running,
        waiting=waiting,
        kv_blocks_used=int(kv * 1000),
        kv_blocks_total=1000,
        prefill_s_per_token=itl_s / 100,
        completed=completed,
        batch=BatchComposition(prefill_tokens=512, decode_seqs=running, heterogeneity=1.3),
        summaries=summaries,
        recent={"itl": recent(itl), "prefill_step": recent(pre), "step": recent(step)},
    )


def replica_load(n: int = 3, **over: list[float]) -> ReplicaLoad:
    """``n`` replicas in one moderate state (idle queue, 20 ms ITL, 20 % KV);
    ``over`` replaces whole fields (lists of ``n`` values)."""
    base = {
        "queue_wait_mean_s": [0.0] * n,
        "queue_wait_std_s": [0.0] * n,
        "prefill_s_per_token": [1e-4] * n,
        "prefill_cv": [0.1] * n,
        "itl_mean_s": [0.02] * n,
        "itl_std_s": [0.004] * n,
        "itl_autocorr": [0.5] * n,
        "sigma_prefill_s": [0.005] * n,
        "kv_pressure": [0.2] * n,
        "kv_capacity_tokens": [100_000.0] * n,
        "heterogeneity": [1.2] * n,
    }
    base.update(over)
    return ReplicaLoad(**{k: np.asarray(v, dtype=float) for k, v in base.items()})


def random_load(rng: np.random.Generator, r: int, queue_sd_zero_frac: float = 0.2) -> ReplicaLoad:
    """``r`` replicas in random states; a fraction of them with no queue-wait σ
    and ~30 % with no ITL history (σ_ITL = 0: the cascade model's σ)."""
    return ReplicaLoad(
        queue_wait_mean_s=rng.uniform(0, 2, r),
        queue_wait_std_s=np.where(rng.random(r) < queue_sd_zero_frac, 0.0, rng.uniform(0, 1, r)),
        prefill_s_per_token=rng.uniform(1e-5, 1e-3, r),
        prefill_cv=rng.uniform(0, 1, r),
        itl_mean_s=rng.uniform(5e-3, 0.1, r),
        itl_std_s=np.where(rng.random(r) < 0.3, 0.0, rng.uniform(1e-3, 0.05, r)),
        itl_autocorr=rng.uniform(-0.99, 0.99, r),
        sigma_prefill_s=rng.uniform(1e-4, 0.05, r),
        kv_pressure=rng.uniform(0, 1, r),
        kv_capacity_tokens=rng.uniform(1e3, 1e6, r),
        heterogeneity=rng.uniform(1, 3, r),
    )


def fitted_cascade_model(rng: np.random.Generator, k: int = 50) -> CascadeModel:
    """A cascade model fitted to ``k`` random observations (θ away from the prior)."""
    return CascadeModel().update(
        rng.uniform(1e-3, 0.05, k),
        rng.uniform(0, 1, k),
        rng.uniform(1, 2, k),
        rng.uniform(1e-3, 0.05, k),
    )


def corrupt(snap: ReplicaSnapshot, **fields: object) -> ReplicaSnapshot:
    """A copy of ``snap`` with ``fields`` set without the contract's checks: what a
    buggy or hostile replica's snapshot looks like after unpickling (pickle never
    runs ``__post_init__``)."""
    import copy

    bad = copy.copy(snap)
    for name, value in fields.items():
        object.__setattr__(bad, name, value)
    return bad


def garbage_snapshots(pool: str, t: float) -> list[object]:
    """One malformed snapshot of each kind the controller must reject (NaN,
    negative, inconsistent, from the future, not a snapshot), for ``pool`` at ``t``."""
    good = snapshot("garbage-0", pool=pool, time_s=t)
    nan_stats = {"itl": DecayedStats(float("nan"), 0.01, 10.0, 0.1)}
    return [
        corrupt(good, replica_id="g-nan-time", time_s=float("nan")),
        corrupt(good, replica_id="g-nan-itl", recent=nan_stats),
        corrupt(good, replica_id="g-neg-running", running=-3),
        corrupt(good, replica_id="g-neg-std", recent={"itl": DecayedStats(0.03, -1.0, 10.0, 0.1)}),
        corrupt(good, replica_id="g-kv", kv_blocks_used=5000, kv_blocks_total=1000),
        corrupt(good, replica_id="g-batch", batch=BatchComposition(-5, 2, float("nan"))),
        corrupt(good, replica_id="g-future", time_s=t + 3600.0),
        corrupt(good, replica_id="g-summary", summaries={"itl": "not a summary"}),
        {"replica_id": "g-dict", "pool": pool},
        None,
    ]
