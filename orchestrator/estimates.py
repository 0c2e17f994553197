"""From telemetry to the optimizer's inputs (pure).

The routing optimizer (``optim``) wants, per request class c and pool p, a
zero-load latency, its spread, the replica-seconds a request consumes, the KV
block-seconds it holds, and per-pool variance scales. The controller estimates
them from what replicas report (``PoolTelemetry``, merged per pool) and from the
ingress's per-class traffic (``ClassLoad``):

* zero-load ITL t0_p: the pool's ITL P10 (steps taken when the batch is small);
  prefill cost c_p: the replicas' recent prefill seconds per prompt token.
* service_time[c, p] = P_c·c_p + L_c·t0_p; its σ from the prefill CV and
  L_c independent-ish ITLs of the observed σ.
* demand[c, p] = P_c·c_p + L_c·t0_p / B_p: prefill is compute-bound (no overlap),
  decode is shared by a batch of B_p = ``max_num_seqs`` sequences.
* kv_block_s[c, p] = ⌈(P_c + L_c/2)/block⌉ · service_time (Little's law).
* g_p = σ²(step), m_p = L̄·σ²(ITL), q_p = mean service time, k_p = mean prefill
  time (a preemption recomputes the prefill), η_p = 0 for TP 1.

These are first-order, documented estimates (docs/optimizer.md); what matters
for the decision is that they move with the telemetry and rank pools correctly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optim.inputs import ProblemInputs
from optim.specs import ClassSpec, PoolSpec
from optim.tail import gaussian_kappa
from orchestrator.config import CascadeConfig
from orchestrator.contracts import ClusterView
from replicas.telemetry import ITL, PREFILL_STEP, STEP, ReplicaSnapshot, RequestInfo
from uncertainty import DecayedWelford, Hierarchy

_MIN_S = 1e-6
_DEFAULT_SHAPE = (1020.0, 129.0)  # Azure conv trace medians (prompt, output tokens)
ARRIVAL_HALFLIFE_S = 30.0


@dataclass(frozen=True, slots=True)
class ClassLoad:
    """Traffic of one request class, as the ingress measures it."""

    rate_per_s: float
    rate_ci_per_s: float = 0.0
    prompt_tokens: float = 1020.0  # Azure conv trace medians as defaults
    output_tokens: float = 129.0

    def __post_init__(self) -> None:
        for name in ("rate_per_s", "rate_ci_per_s", "prompt_tokens", "output_tokens"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"ClassLoad.{name} must be finite and >= 0, got {v!r}")


class ArrivalTally:
    """The gateway's per-class arrival counts between two reports."""

    def __init__(self) -> None:
        self._counts: dict[str, list[float]] = {}
        self._since: float | None = None

    def add(self, request: RequestInfo, now_s: float) -> None:
        if self._since is None:
            self._since = now_s
        tally = self._counts.get(request.slo_class)
        if tally is None:
            tally = self._counts[request.slo_class] = [0.0, 0.0, 0.0]
        tally[0] += 1.0
        tally[1] += request.prompt_tokens
        tally[2] += request.max_tokens

    def take(self, now_s: float) -> tuple[dict[str, tuple[int, float, float]], float]:
        """Per class (requests, mean prompt tokens, mean max tokens) since the
        last ``take``, and the seconds that covers; starts a new period."""
        since = self._since if self._since is not None else now_s
        counts = {
            c: (int(v[0]), v[1] / max(v[0], 1.0), v[2] / max(v[0], 1.0))
            for c, v in self._counts.items()
        }
        self._counts, self._since = {}, now_s
        return counts, max(now_s - since, 0.0)


class ClassTraffic:
    """Per-class arrival rate and request shape, from the gateway's tallies.

    ``report(counts, period_s, now_s)``: ``counts[class] = (requests, mean prompt
    tokens, mean max tokens)`` over the last ``period_s`` seconds (what
    ``Gateway.take_arrivals`` returns; the Ray ingress reports it every second,
    the simulator at each controller tick). The rate is a time-decayed mean
    (half-life ``ARRIVAL_HALFLIFE_S``) with a 95 % confidence half-width;
    ``loads(output_tokens)`` gives the optimizer's ``ClassLoad`` per class seen.
    """

    def __init__(self) -> None:
        self.arrivals: dict[str, DecayedWelford] = {}
        self.shapes: dict[str, tuple[float, float]] = {}

    def report(
        self, counts: Mapping[str, tuple[int, float, float]], period_s: float, now_s: float
    ) -> None:
        for cls, (n, prompt, output) in counts.items():
            est = self.arrivals.setdefault(cls, DecayedWelford(halflife_s=ARRIVAL_HALFLIFE_S))
            est.update([n / max(period_s, 1e-3)], [now_s])
            if n:
                self.shapes[cls] = (float(prompt), float(output))

    def loads(
        self, output_tokens: float | None = None, per_class: Mapping[str, float] | None = None
    ) -> dict[str, ClassLoad]:
        """Per class seen so far. A request's ``max_tokens`` only caps its answer
        (clients ask for far more than they get): the output length is the
        class's measured mean (``per_class``, from the output-length model), else
        the cluster's ``output_tokens`` (``Monitor.mean_output_tokens``; the
        default shape without one), capped by the class's mean ``max_tokens``."""
        cluster = output_tokens if output_tokens is not None else _DEFAULT_SHAPE[1]
        out = {}
        for c, est in self.arrivals.items():
            if not est.count:
                continue
            lo, hi = est.ci(0.95)
            half = float((hi - lo) / 2) if math.isfinite(hi) and math.isfinite(lo) else 0.0
            prompt, max_tokens = self.shapes.get(c, _DEFAULT_SHAPE)
            output = min(max_tokens, (per_class or {}).get(c, cluster))
            out[c] = ClassLoad(max(est.mean, 0.0), max(half, 0.0), prompt, output)
        return out

    def rates(self) -> dict[str, float]:
        return {c: float(est.mean) for c, est in self.arrivals.items() if est.count}

    def load_state(
        self,
        arrivals: Mapping[str, Mapping[str, Any]],
        shapes: Mapping[str, tuple[float, float]],
    ) -> None:
        """Restore from a checkpoint: per class ``DecayedWelford.to_dict()`` and
        (prompt, output) shape; ``ValueError`` if malformed (nothing changes)."""
        try:
            est = {str(c): DecayedWelford.from_dict(dict(d)) for c, d in arrivals.items()}
            shp = {str(c): (float(v[0]), float(v[1])) for c, v in shapes.items()}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"class traffic state: {exc!r}") from None
        self.arrivals, self.shapes = est, shp


@dataclass(frozen=True, slots=True)
class PoolTelemetry:
    """What the controller knows of one pool's replicas (seconds, tokens)."""

    replicas: int
    itl_p10_s: float
    itl_sigma_s: float
    step_sigma_s: float
    prefill_s_per_token: float
    prefill_cv: float
    kv_blocks_per_replica: int
    block_size: int
    batch_size: int  # max_num_seqs


def problem_inputs(
    classes: Sequence[ClassLoad],
    pools: Sequence[PoolTelemetry],
    *,
    w_gpu: float,
    w_mem: float,
    w_net: float,
    rho_max: float,
    net_var_s2: Sequence[float] | None = None,
) -> ProblemInputs:
    """Build ``ProblemInputs`` (shapes (C, P)) from class loads and pool telemetry.

    Raises ``ValueError`` (from ``ProblemInputs``) naming the field and index if an
    estimate comes out non-finite or negative.
    """
    prompt = np.array([c.prompt_tokens for c in classes])[:, None]
    output = np.array([max(c.output_tokens, 1.0) for c in classes])[:, None]
    t0 = np.array([max(p.itl_p10_s, _MIN_S) for p in pools])[None, :]
    cpt = np.array([max(p.prefill_s_per_token, 0.0) for p in pools])[None, :]
    cv = np.array([p.prefill_cv for p in pools])[None, :]
    itl_sd = np.array([p.itl_sigma_s for p in pools])[None, :]
    batch = np.array([max(p.batch_size, 1) for p in pools], dtype=np.float64)[None, :]
    block = np.array([max(p.block_size, 1) for p in pools], dtype=np.float64)[None, :]
    prefill = prompt * cpt
    service = np.maximum(prefill + output * t0, _MIN_S)
    service_sd = np.sqrt((cv * prefill) ** 2 + output * itl_sd**2)
    demand = np.maximum(prefill + output * t0 / batch, _MIN_S)
    kv_block_s = np.ceil((prompt + output / 2.0) / block) * service
    mean_service = service.mean(axis=0)
    lbar = float(output.mean())
    return ProblemInputs(
        arrival_rate_per_s=np.array([c.rate_per_s for c in classes]),
        arrival_rate_ci_per_s=np.array([c.rate_ci_per_s for c in classes]),
        replicas=np.array([float(p.replicas) for p in pools]),
        service_time_s=service,
        service_std_s=service_sd,
        demand_s=demand,
        kv_block_s=kv_block_s,
        gpu_var_s2=np.array([p.step_sigma_s**2 for p in pools]),
        kv_var_s2=np.array([lbar * p.itl_sigma_s**2 for p in pools]),
        net_var_s2=np.zeros(len(pools)) if net_var_s2 is None else np.asarray(net_var_s2),
        queue_delay_s=mean_service,
        preempt_delay_s=prefill.mean(axis=0),
        w_gpu=w_gpu,
        w_mem=w_mem,
        w_net=w_net,
        rho_max=rho_max,
    )


def proportional_weights(replicas: Mapping[str, int]) -> dict[str, float]:
    """Routing proportional to running replicas (the static/fallback split)."""
    total = sum(max(n, 0) for n in replicas.values())
    if total == 0:
        return {p: 1.0 / len(replicas) for p in replicas} if replicas else {}
    return {p: max(n, 0) / total for p, n in replicas.items()}


# ---- the optimizer's specs from the config and the controller's view ----------------
def mean_recent(snaps: Sequence[ReplicaSnapshot], metric: str, field: str) -> float:
    """Mean over ``snaps`` of ``recent[metric].<field>`` (0 when none has it)."""
    vals = [getattr(s.recent[metric], field) for s in snaps if metric in s.recent]
    return float(np.mean(vals)) if vals else 0.0


def pool_telemetry(
    config: CascadeConfig,
    latest: Iterable[ReplicaSnapshot],
    view: ClusterView,
    itl: Hierarchy,
) -> list[PoolTelemetry] | None:
    """Per configured pool, what the optimizer needs from its fresh snapshots and
    merged ITL (``itl``: the controller's ITL hierarchy); None while a pool has
    no fresh snapshot or no ITL yet."""
    by_pool: dict[str, list[ReplicaSnapshot]] = {p.name: [] for p in config.pools}
    for snap in latest:
        if snap.pool in by_pool:
            by_pool[snap.pool].append(snap)
    out = []
    for pool in config.pools:
        snaps = by_pool[pool.name]
        merged = view.pools[pool.name].metrics.get(ITL)
        if not snaps or merged is None or not math.isfinite(merged.p50):
            return None
        step = view.pools[pool.name].metrics.get(STEP)
        pre = [s.recent[PREFILL_STEP] for s in snaps if PREFILL_STEP in s.recent]
        pre_cv = float(np.mean([p.std / p.mean for p in pre if p.mean > 0])) if pre else 0.3
        overrides: Mapping[str, Any] = pool.engine_overrides
        out.append(
            PoolTelemetry(
                replicas=len(snaps),
                itl_p10_s=float(itl.summary((pool.name,)).quantile(0.1)),
                itl_sigma_s=mean_recent(snaps, ITL, "std") or merged.std,
                step_sigma_s=step.std
                if step is not None and math.isfinite(step.std)
                else merged.std,
                prefill_s_per_token=float(np.mean([s.prefill_s_per_token for s in snaps])),
                prefill_cv=pre_cv if math.isfinite(pre_cv) else 0.3,
                kv_blocks_per_replica=int(np.mean([s.kv_blocks_total for s in snaps])),
                block_size=snaps[0].block_size,
                batch_size=int(overrides.get("max_num_seqs", config.model.max_num_seqs)),
            )
        )
    return out


def pool_specs(config: CascadeConfig, telemetry: Sequence[PoolTelemetry]) -> list[PoolSpec]:
    """The optimizer's pools: the config's bounds and costs, measured capacity."""
    return [
        PoolSpec(
            name=p.name,
            gpu_type=p.accelerator,
            tp_size=p.tp_size,
            min_replicas=p.min_replicas,
            max_replicas=p.max_replicas,
            capacity_tokens_per_s=t.batch_size / max(t.itl_p10_s, 1e-6),
            kv_blocks=max(t.kv_blocks_per_replica, 1),
            interconnect=p.interconnect,
            gpu_cost_per_hour=p.gpu_cost_per_hour,
        )
        for p, t in zip(config.pools, telemetry, strict=True)
    ]


def class_specs(config: CascadeConfig, loads: Sequence[ClassLoad]) -> list[ClassSpec]:
    """The optimizer's classes: each SLO class's E2E target at its mean length."""
    return [
        ClassSpec(
            name=c.name,
            # a deployment's classes set tpot_s (SloConfig), so the target exists
            slo_s=c.e2e_target_s(load.output_tokens) or math.nan,
            quantile=c.quantile,
            tail_factor=None if config.optimizer.tail == "cantelli" else gaussian_kappa(c.quantile),
            prompt_tokens=load.prompt_tokens,
            output_tokens=max(load.output_tokens, 1.0),
        )
        for c, load in zip(config.slos.classes, loads, strict=True)
    ]
