"""Per-request latency-distribution prediction on candidate replicas: the model
and its API (``predict_latency``, ``predict_slo_probability``, ``LatencyPrediction``).

Given each candidate replica's state (``uncertainty.replica_load.ReplicaLoad``, a
struct of arrays over replicas) and a request's prompt length and expected
output length, predict TTFT and E2E:

    TTFT = queue wait + prefill,         prefill ≈ P · c_prefill  (CV from telemetry)
    E2E  = TTFT + (L − 1) · ITL

The decode σ this request will see comes from the replica's observed ITL σ,
scaled by the ``CascadeModel``'s predicted change from admitting it: its prefill
adds variance to the prefill steps the running decodes share, and its tokens add
KV pressure. Summing L − 1 autocorrelated ITLs inflates their variance by the
AR(1) factor (1 + ρ)/(1 − ρ). Output-length uncertainty adds ITL² · Var(L).

Latencies are positive and right-skewed, so quantiles and SLO probabilities use a
lognormal matched to the predicted mean and variance. The joint probability of
meeting both a TTFT and an E2E SLO is taken as the product of the two marginals:
TTFT and E2E are positively associated, for which the product is a lower bound
(Harris/FKG), so the estimate is conservative.

Where it is computed: ``uncertainty.prediction_reference`` writes these formulas
out one quantity per line (read it to see the model); ``uncertainty.
prediction_fast`` computes the same numbers as one matrix product per request
(a router's hot path; its docstring says why that is correct, how equality is
tested and what it gains). Lognormal helpers: ``uncertainty.lognormal``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from uncertainty.cascade import CascadeModel
from uncertainty.lognormal import check_slo, lognormal_cdf, lognormal_quantile
from uncertainty.prediction_fast import (
    Block,
    block_slo_probability,
    latency_moments,
    slo_probability_and_mean,
)
from uncertainty.replica_load import ReplicaLoad
from uncertainty.validation import FloatArray


@dataclass(frozen=True)
class LatencyPrediction:
    """Predicted latency distributions (seconds) for one request on R replicas."""

    ttft_mean_s: FloatArray
    ttft_var_s2: FloatArray
    e2e_mean_s: FloatArray
    e2e_var_s2: FloatArray
    itl_std_s: FloatArray  # predicted decode ITL σ with this request admitted
    # Set by predict_latency: its raw prediction block and the cascade weights
    # (prediction_fast), so that prob_within evaluates both CDFs by the very
    # operations of predict_slo_probability. None for a prediction built by hand.
    _block: Block | None = field(default=None, repr=False, compare=False)

    @property
    def ttft_std_s(self) -> FloatArray:
        out: FloatArray = np.sqrt(self.ttft_var_s2)
        return out

    @property
    def e2e_std_s(self) -> FloatArray:
        out: FloatArray = np.sqrt(self.e2e_var_s2)
        return out

    def ttft_quantile(self, q: float) -> FloatArray:
        return lognormal_quantile(self.ttft_mean_s, self.ttft_var_s2, q)

    def e2e_quantile(self, q: float) -> FloatArray:
        return lognormal_quantile(self.e2e_mean_s, self.e2e_var_s2, q)

    def prob_within(
        self, ttft_slo_s: float | None = None, e2e_slo_s: float | None = None
    ) -> FloatArray:
        """P(TTFT ≤ ttft_slo and E2E ≤ e2e_slo) per replica (conservative product)."""
        if ttft_slo_s is not None and e2e_slo_s is not None and self._block is not None:
            check_slo(ttft_slo_s)
            check_slo(e2e_slo_s)
            return block_slo_probability(self._block, ttft_slo_s, e2e_slo_s)
        p = np.ones_like(self.e2e_mean_s)
        if ttft_slo_s is not None:
            p = lognormal_cdf(self.ttft_mean_s, self.ttft_var_s2, ttft_slo_s)
        if e2e_slo_s is not None:
            p = p * lognormal_cdf(self.e2e_mean_s, self.e2e_var_s2, e2e_slo_s)
        return p


def predict_latency(
    model: CascadeModel,
    load: ReplicaLoad,
    prompt_tokens: int,
    output_tokens: float,
    output_tokens_std: float = 0.0,
) -> LatencyPrediction:
    """Predict TTFT/E2E distributions of one request on each replica in ``load``.

    ``output_tokens`` is the expected output length (e.g. ``max_tokens`` or a
    predicted length) and ``output_tokens_std`` its uncertainty. Raises
    ``ValueError`` for a negative or non-finite length.

    Means carry a floor of 1e-150 s and variances one of 1e-24 s² (so that the
    lognormal CDF needs no clamping); both are far below any real latency.

    Hot path (a router calls it per request): the request-independent terms of
    ``load`` are computed once per ``ReplicaLoad`` and cached on it (treat a
    ``ReplicaLoad``'s arrays as immutable). A router that only needs P(meet SLO)
    calls ``predict_slo_probability``, which skips building this object.
    """
    _check_lengths(prompt_tokens, output_tokens, output_tokens_std)
    moments, block = latency_moments(
        model, load, float(prompt_tokens), output_tokens, output_tokens_std
    )
    ttft_mean, ttft_var, e2e_mean, e2e_var, itl_std = moments
    return LatencyPrediction(ttft_mean, ttft_var, e2e_mean, e2e_var, itl_std, _block=block)


def predict_slo_probability(
    model: CascadeModel,
    load: ReplicaLoad,
    prompt_tokens: int,
    output_tokens: float,
    output_tokens_std: float,
    ttft_slo_s: float,
    e2e_slo_s: float,
    e2e_shift_s: float = 0.0,
) -> tuple[FloatArray, FloatArray]:
    """(P(TTFT ≤ ``ttft_slo_s`` and E2E ≤ ``e2e_slo_s``), E2E mean +
    ``e2e_shift_s``) per replica, two fresh arrays: the same numbers, computed by
    the same operations in the same order, as ``predict_latency(...).
    prob_within(ttft_slo_s, e2e_slo_s)`` and its ``e2e_mean_s + e2e_shift_s``,
    without building the ``LatencyPrediction``. The router's per-request path:
    17 array operations, in place in a per-thread workspace. (The shift saves a
    router's tie-break one operation: it needs mean + target.)

    Raises ``ValueError`` for bad lengths (as ``predict_latency``) or an SLO ≤ 0.
    """
    # one chained comparison on the hot path (False for NaN too); the detailed
    # checks only to say what is wrong
    if not (
        0 <= prompt_tokens < math.inf
        and 1.0 <= output_tokens < math.inf
        and 0.0 <= output_tokens_std < math.inf
        and 0.0 < ttft_slo_s < math.inf
        and 0.0 < e2e_slo_s < math.inf
        and abs(e2e_shift_s) < math.inf
    ):
        _check_lengths(prompt_tokens, output_tokens, output_tokens_std)
        raise ValueError(
            f"SLOs must be finite and > 0 seconds and the shift finite, got "
            f"{ttft_slo_s!r}, {e2e_slo_s!r}, {e2e_shift_s!r}"
        )
    return slo_probability_and_mean(
        model,
        load,
        float(prompt_tokens),
        output_tokens,
        output_tokens_std,
        ttft_slo_s,
        e2e_slo_s,
        e2e_shift_s,
    )


def _check_lengths(prompt_tokens: int, output_tokens: float, output_tokens_std: float) -> None:
    if not (0 <= prompt_tokens < math.inf and 1.0 <= output_tokens < math.inf):
        raise ValueError(
            f"request lengths: prompt_tokens={prompt_tokens!r} must be >= 0 and "
            f"output_tokens={output_tokens!r} must be >= 1"
        )
    if not 0.0 <= output_tokens_std < math.inf:
        raise ValueError(f"output_tokens_std={output_tokens_std!r} must be finite and >= 0")
