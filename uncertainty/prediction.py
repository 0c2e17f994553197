"""Per-request latency-distribution prediction on candidate replicas.

Given each candidate replica's state (``ReplicaLoad``, a struct of arrays over
replicas, so that a router scores 64 replicas with a handful of numpy ops) and a
request's prompt length and expected output length, predict TTFT and E2E:

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from uncertainty.cascade import CascadeModel
from uncertainty.validation import FloatArray

_EPS = 1e-12


@dataclass(frozen=True)
class ReplicaLoad:
    """State of R candidate replicas, one array entry per replica (shape (R,)).

    Units: seconds, tokens, fractions. All arrays must have the same length.
    """

    queue_wait_mean_s: FloatArray  # predicted wait before this request's prefill starts
    queue_wait_std_s: FloatArray
    prefill_s_per_token: FloatArray  # mean prefill cost per prompt token
    prefill_cv: FloatArray  # coefficient of variation of prefill time
    itl_mean_s: FloatArray  # current mean decode inter-token latency
    itl_std_s: FloatArray  # current observed ITL σ (0 = unknown → model only)
    itl_autocorr: FloatArray  # lag-1 autocorrelation of ITLs, in (−1, 1)
    sigma_prefill_s: FloatArray  # current σ of prefill step times (> 0)
    kv_pressure: FloatArray  # fraction of KV blocks in use, [0, 1]
    kv_capacity_tokens: FloatArray  # KV capacity in tokens (> 0)
    heterogeneity: FloatArray  # batch heterogeneity, >= 1

    def __post_init__(self) -> None:
        sizes = {name: np.shape(getattr(self, name)) for name in self.__dataclass_fields__}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"ReplicaLoad: arrays differ in shape: {sizes}")
        for name in self.__dataclass_fields__:
            arr = np.asarray(getattr(self, name))
            if not np.isfinite(arr).all():
                i = int(np.argmin(np.isfinite(arr)))
                raise ValueError(f"ReplicaLoad.{name}[{i}] is not finite")

    @property
    def size(self) -> int:
        return int(np.shape(self.itl_mean_s)[0])


@dataclass(frozen=True)
class LatencyPrediction:
    """Predicted latency distributions (seconds) for one request on R replicas."""

    ttft_mean_s: FloatArray
    ttft_var_s2: FloatArray
    e2e_mean_s: FloatArray
    e2e_var_s2: FloatArray
    itl_std_s: FloatArray  # predicted decode ITL σ with this request admitted

    @property
    def ttft_std_s(self) -> FloatArray:
        out: FloatArray = np.sqrt(self.ttft_var_s2)
        return out

    @property
    def e2e_std_s(self) -> FloatArray:
        out: FloatArray = np.sqrt(self.e2e_var_s2)
        return out

    def ttft_quantile(self, q: float) -> FloatArray:
        return _lognormal_quantile(self.ttft_mean_s, self.ttft_var_s2, q)

    def e2e_quantile(self, q: float) -> FloatArray:
        return _lognormal_quantile(self.e2e_mean_s, self.e2e_var_s2, q)

    def prob_within(
        self, ttft_slo_s: float | None = None, e2e_slo_s: float | None = None
    ) -> FloatArray:
        """P(TTFT ≤ ttft_slo and E2E ≤ e2e_slo) per replica (conservative product)."""
        p = np.ones_like(self.e2e_mean_s)
        if ttft_slo_s is not None:
            p = p * _lognormal_cdf(self.ttft_mean_s, self.ttft_var_s2, ttft_slo_s)
        if e2e_slo_s is not None:
            p = p * _lognormal_cdf(self.e2e_mean_s, self.e2e_var_s2, e2e_slo_s)
        return p


def _lognormal_params(mean: FloatArray, var: FloatArray) -> tuple[FloatArray, FloatArray]:
    m = np.maximum(mean, _EPS)
    s2 = np.log1p(var / (m * m))
    return np.log(m) - 0.5 * s2, np.sqrt(s2)


def _lognormal_quantile(mean: FloatArray, var: FloatArray, q: float) -> FloatArray:
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q!r}")
    mu, s = _lognormal_params(mean, var)
    out: FloatArray = np.exp(mu + s * float(ndtri(q)))
    return out


def _lognormal_cdf(mean: FloatArray, var: FloatArray, x: float) -> FloatArray:
    if not x > 0:
        raise ValueError(f"SLO must be > 0 seconds, got {x!r}")
    mu, s = _lognormal_params(mean, var)
    out: FloatArray = ndtr((np.log(x) - mu) / np.maximum(s, _EPS))
    return out


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
    """
    if prompt_tokens < 0 or not math.isfinite(output_tokens) or output_tokens < 1:
        raise ValueError(
            f"request lengths: prompt_tokens={prompt_tokens!r} must be >= 0 and "
            f"output_tokens={output_tokens!r} must be >= 1"
        )
    if not math.isfinite(output_tokens_std) or output_tokens_std < 0:
        raise ValueError(f"output_tokens_std={output_tokens_std!r} must be finite and >= 0")
    p = float(prompt_tokens)
    prefill_mean = p * load.prefill_s_per_token
    prefill_sd = load.prefill_cv * prefill_mean
    ttft_mean = load.queue_wait_mean_s + prefill_mean
    ttft_var = load.queue_wait_std_s**2 + prefill_sd**2

    # The cascade: this request's prefill joins the prefill steps that running
    # decodes share, and its tokens raise KV pressure.
    sp_from = np.maximum(load.sigma_prefill_s, _EPS)
    sp_to = np.sqrt(sp_from**2 + prefill_sd**2)
    kv_from = np.clip(load.kv_pressure, 0.0, 1.0)
    kv_to = np.clip(
        kv_from + (p + output_tokens) / np.maximum(load.kv_capacity_tokens, 1.0), 0.0, 1.0
    )
    model_sigma = model.sigma_decode(sp_to, kv_to, np.maximum(load.heterogeneity, 1.0))
    observed_scaled = load.itl_std_s * np.exp(model.log_ratio(sp_from, sp_to, kv_from, kv_to))
    itl_sd = np.where(load.itl_std_s > 0, observed_scaled, model_sigma)

    rho = np.clip(load.itl_autocorr, -0.95, 0.95)
    n_dec = max(output_tokens - 1.0, 0.0)
    dec_var = n_dec * itl_sd**2 * (1.0 + rho) / (1.0 - rho)
    e2e_mean = ttft_mean + n_dec * load.itl_mean_s
    e2e_var = ttft_var + dec_var + (load.itl_mean_s * output_tokens_std) ** 2
    return LatencyPrediction(
        ttft_mean_s=ttft_mean,
        ttft_var_s2=ttft_var,
        e2e_mean_s=e2e_mean,
        e2e_var_s2=e2e_var,
        itl_std_s=itl_sd,
    )
