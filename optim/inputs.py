"""What the controller estimates from telemetry before each solve.

All arrays are indexed ``[class, pool]`` (shape ``(C, P)``), ``[class]`` or
``[pool]``, in the order of the specs the problem was built with. Every field is
validated on construction; see docs/optimizer.md for how each one is fitted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optim.checks import BoolArray, FloatArray, bool_array, float_array, nonnegative, scalar_in


@dataclass(frozen=True)
class ProblemInputs:
    """Telemetry estimates for one solve (arrays become read-only float64).

    Attributes (C classes, P pools; s = seconds):
        arrival_rate_per_s: λ_c, requests/s of each class (C,).
        replicas: n_p, replicas currently running in each pool (P,), >= 0.
        service_time_s: mean end-to-end latency of class c on pool p at zero load (C, P), > 0.
        service_std_s: its standard deviation at zero load (C, P).
        demand_s: replica-seconds one class-c request consumes on pool p, i.e. the
            inverse of one replica's throughput in class-c requests/s (C, P), > 0.
            Utilization is ``ρ_p = Σ_c λ_c·x_cp·demand_s[c, p] / n_p``.
        kv_block_s: KV block-seconds one request holds (mean blocks × residence time)
            (C, P). By Little's law the occupancy is
            ``o_p = Σ_c λ_c·x_cp·kv_block_s[c, p] / (n_p·kv_blocks_p)``.
        gpu_var_s2: GPU step-time variance scale g_p (P,): a replica's step-time
            variance is ``g_p·ρ²/(1-ρ)`` plus the heterogeneity term.
        kv_var_s2: KV-cache variance scale m_p (P,): ``m_p·o²/(1-o)`` (preemption cliff).
        net_var_s2: interconnect variance at full load η_p (P,): ``η_p·ρ²``;
            see :func:`optim.interconnect.net_variance_s2` (0 when tp_size is 1).
        queue_delay_s: q_p (P,): mean queueing delay is ``q_p·ρ/(1-ρ)`` and it adds the
            same amount to the latency's standard deviation (M/M/1-like).
        preempt_delay_s: k_p (P,): preemption/recompute delay ``k_p·o/(1-o)`` (mean and σ).
        hetero_var_s2: step-time variance that class c adds per unit of pool
            utilization (batch heterogeneity) (C, P); default zeros.
        w_gpu, w_mem, w_net: objective weights (>= 0, dimensionless).
        rho_max: utilization cap per pool, in (0, 1).
        kv_max: KV occupancy cap per pool, in (0, 1).
        allowed: pairs the router may use (C, P); default all. Pairs whose SLO is
            out of reach even at zero load are excluded automatically at solve time.
        arrival_rate_ci_per_s: half-width of the confidence interval of each λ_c
            (from the ``uncertainty`` estimators) (C,); default zeros. The
            allocator does not move for a change inside it.

    Raises:
        ValueError: naming the field and index of the first bad value (negative
            rates, NaN variances, wrong shapes, zero demands, caps out of range).
    """

    arrival_rate_per_s: FloatArray
    replicas: FloatArray
    service_time_s: FloatArray
    service_std_s: FloatArray
    demand_s: FloatArray
    kv_block_s: FloatArray
    gpu_var_s2: FloatArray
    kv_var_s2: FloatArray
    net_var_s2: FloatArray
    queue_delay_s: FloatArray
    preempt_delay_s: FloatArray
    hetero_var_s2: FloatArray | None = None
    w_gpu: float = 1.0
    w_mem: float = 1.0
    w_net: float = 1.0
    rho_max: float = 0.9
    kv_max: float = 0.95
    allowed: BoolArray | None = None
    arrival_rate_ci_per_s: FloatArray | None = field(default=None)

    def __post_init__(self) -> None:
        rates = float_array(
            "arrival_rate_per_s",
            self.arrival_rate_per_s,
            np.shape(self.arrival_rate_per_s),
            axes=("c",),
        )
        replicas = float_array("replicas", self.replicas, np.shape(self.replicas), axes=("p",))
        if rates.ndim != 1 or rates.size == 0:
            raise ValueError(f"arrival_rate_per_s must be a non-empty 1-D array, got {rates.shape}")
        if replicas.ndim != 1 or replicas.size == 0:
            raise ValueError(f"replicas must be a non-empty 1-D array, got {replicas.shape}")
        if not np.all(replicas == np.round(replicas)):
            i = int(np.argmax(replicas != np.round(replicas)))
            raise ValueError(f"replicas[p={i}] must be an integer, got {replicas[i]}")
        c, p = rates.size, replicas.size
        self._set("arrival_rate_per_s", rates)
        self._set("replicas", replicas)
        cp, pools, classes = (c, p), (p,), (c,)
        self._set(
            "service_time_s",
            float_array("service_time_s", self.service_time_s, cp, strictly_positive=True),
        )
        self._set("service_std_s", float_array("service_std_s", self.service_std_s, cp))
        self._set("demand_s", float_array("demand_s", self.demand_s, cp, strictly_positive=True))
        self._set("kv_block_s", float_array("kv_block_s", self.kv_block_s, cp))
        for name in ("gpu_var_s2", "kv_var_s2", "net_var_s2", "queue_delay_s", "preempt_delay_s"):
            self._set(name, float_array(name, getattr(self, name), pools, axes=("p",)))
        hetero = np.zeros(cp) if self.hetero_var_s2 is None else self.hetero_var_s2
        self._set("hetero_var_s2", float_array("hetero_var_s2", hetero, cp))
        ci = np.zeros(classes) if self.arrival_rate_ci_per_s is None else self.arrival_rate_ci_per_s
        self._set(
            "arrival_rate_ci_per_s", float_array("arrival_rate_ci_per_s", ci, classes, axes=("c",))
        )
        allowed = np.ones(cp, dtype=bool) if self.allowed is None else self.allowed
        self._set("allowed", bool_array("allowed", allowed, cp))
        for name in ("w_gpu", "w_mem", "w_net"):
            self._set(name, nonnegative(name, getattr(self, name)))
        self._set("rho_max", scalar_in("rho_max", self.rho_max, 0.0, 1.0, closed_high=False))
        self._set("kv_max", scalar_in("kv_max", self.kv_max, 0.0, 1.0, closed_high=False))

    def _set(self, name: str, value: Any) -> None:
        # Frozen dataclass: normalization in __post_init__ must bypass __setattr__.
        object.__setattr__(self, name, value)

    @property
    def num_classes(self) -> int:
        return int(self.arrival_rate_per_s.size)

    @property
    def num_pools(self) -> int:
        return int(self.replicas.size)

    @property
    def hetero(self) -> FloatArray:
        """``hetero_var_s2`` after normalization (never None)."""
        assert self.hetero_var_s2 is not None  # set in __post_init__
        return self.hetero_var_s2

    @property
    def allowed_mask(self) -> BoolArray:
        """``allowed`` after normalization (never None)."""
        assert self.allowed is not None  # set in __post_init__
        return self.allowed

    @property
    def rate_ci(self) -> FloatArray:
        """``arrival_rate_ci_per_s`` after normalization (never None)."""
        assert self.arrival_rate_ci_per_s is not None  # set in __post_init__
        return self.arrival_rate_ci_per_s

    def replace(self, **changes: Any) -> ProblemInputs:
        """A validated copy with some fields changed (e.g. new rates or replicas)."""
        return dataclasses.replace(self, **changes)
