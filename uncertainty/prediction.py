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
from dataclasses import dataclass, field
from functools import cached_property

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

    @cached_property
    def _terms(self) -> _LoadTerms:
        # computed on first use and kept: a router predicts many requests
        # against the same load between two snapshots
        return _LoadTerms(self)

    def with_queue_wait(self, mean_s: FloatArray, std_s: FloatArray) -> ReplicaLoad:
        """This load with another queue wait (e.g. counting requests routed since
        the snapshot). Only the two new arrays are validated, and the cached
        request-independent terms are shared (they do not depend on the queue),
        so a router can refresh queue waits per request cheaply."""
        mean_s = np.asarray(mean_s, dtype=np.float64)
        std_s = np.asarray(std_s, dtype=np.float64)
        shape = np.shape(self.itl_mean_s)
        for name, arr in (("queue_wait_mean_s", mean_s), ("queue_wait_std_s", std_s)):
            if arr.shape != shape:
                raise ValueError(f"ReplicaLoad.{name}: shape {arr.shape} != {shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"ReplicaLoad.{name}: not finite")
        new = object.__new__(ReplicaLoad)
        new.__dict__.update(self.__dict__)
        new.__dict__["_terms"] = self._terms
        new.__dict__["queue_wait_mean_s"] = mean_s
        new.__dict__["queue_wait_std_s"] = std_s
        return new


@dataclass(frozen=True)
class LatencyPrediction:
    """Predicted latency distributions (seconds) for one request on R replicas."""

    ttft_mean_s: FloatArray
    ttft_var_s2: FloatArray
    e2e_mean_s: FloatArray
    e2e_var_s2: FloatArray
    itl_std_s: FloatArray  # predicted decode ITL σ with this request admitted
    # Set by predict_latency: (2, R) mean and variance arrays whose rows are the
    # TTFT and E2E fields above (those are views of them), so prob_within can
    # evaluate both CDFs in one pass: half the array operations on a router's
    # hot path. None for a prediction built by hand.
    _rows: tuple[FloatArray, FloatArray] | None = field(default=None, repr=False, compare=False)

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
        if ttft_slo_s is not None and e2e_slo_s is not None and self._rows is not None:
            _check_slo(ttft_slo_s)
            _check_slo(e2e_slo_s)
            log_x = np.array([[math.log(ttft_slo_s)], [math.log(e2e_slo_s)]])
            both = _lognormal_cdf_log(self._rows[0], self._rows[1], log_x)
            out: FloatArray = both[0] * both[1]
            return out
        p = np.ones_like(self.e2e_mean_s)
        if ttft_slo_s is not None:
            p = _lognormal_cdf(self.ttft_mean_s, self.ttft_var_s2, ttft_slo_s)
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


def _check_slo(x: float) -> None:
    if not x > 0:
        raise ValueError(f"SLO must be > 0 seconds, got {x!r}")


def _lognormal_cdf(mean: FloatArray, var: FloatArray, x: float) -> FloatArray:
    _check_slo(x)
    return _lognormal_cdf_log(mean, var, math.log(x))


def _lognormal_cdf_log(mean: FloatArray, var: FloatArray, log_x: float | FloatArray) -> FloatArray:
    # z = (log x − μ)/s with μ = log m − s²/2, written to save array operations
    m = np.maximum(mean, _EPS)
    s2 = np.log1p(var / (m * m))
    z = (log_x - np.log(m) + 0.5 * s2) / np.maximum(np.sqrt(s2), _EPS)
    out: FloatArray = ndtr(z)
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

    Hot path (a router calls it per request): the request-independent terms of
    ``load`` are computed once per ``ReplicaLoad`` and cached on it, so a call
    is ~30 array operations (treat a ``ReplicaLoad``'s arrays as immutable).
    """
    if prompt_tokens < 0 or not math.isfinite(output_tokens) or output_tokens < 1:
        raise ValueError(
            f"request lengths: prompt_tokens={prompt_tokens!r} must be >= 0 and "
            f"output_tokens={output_tokens!r} must be >= 1"
        )
    if not math.isfinite(output_tokens_std) or output_tokens_std < 0:
        raise ValueError(f"output_tokens_std={output_tokens_std!r} must be finite and >= 0")
    t = load._terms
    p = float(prompt_tokens)
    # rows: (TTFT, E2E); see LatencyPrediction._rows
    mean = np.empty((2, t.n))
    var = np.empty((2, t.n))
    prefill_var = t.prefill_var_per_tok2 * (p * p)  # (CV · P · c)²
    ttft_mean = np.add(load.queue_wait_mean_s, p * load.prefill_s_per_token, out=mean[0])
    ttft_var = np.add(load.queue_wait_std_s**2, prefill_var, out=var[0])

    # The cascade: this request's prefill joins the prefill steps that running
    # decodes share (σ_p² → σ_p² + σ_prefill²), and its tokens raise KV pressure.
    theta = model._theta
    a, b = float(theta[1]), float(theta[2])
    log_sp2_to = np.log(t.sp_from2 + prefill_var)
    log1p_kv_to = np.log1p(np.minimum(t.kv_from + (p + output_tokens) * t.inv_capacity, 1.0))
    # Decode ITL variance with this request admitted, in one formula for every
    # replica (the two cases of the docstring share their coefficients):
    #   observed σ: σ_obs² · exp(2·log_ratio) = exp(log σ_obs² − a·log σ_p,from²
    #               − 2b·log(1+kv_from) + a·log σ_p,to² + 2b·log(1+kv_to))
    #   none yet:   σ_model² = exp(2θ0 + 2θ3·log h + a·log σ_p,to² + 2b·log(1+kv_to))
    # so only a per-replica offset differs; it is cached per (load, θ).
    itl_var = np.exp(t.log_var_offset(theta) + a * log_sp2_to + (2.0 * b) * log1p_kv_to)
    itl_sd = np.sqrt(itl_var)

    n_dec = max(output_tokens - 1.0, 0.0)
    e2e_mean = np.add(ttft_mean, n_dec * load.itl_mean_s, out=mean[1])
    # summing L − 1 AR(1) ITLs inflates their variance by (1 + ρ)/(1 − ρ)
    dec_var = itl_var * (n_dec * t.ar_factor)
    if output_tokens_std > 0:
        dec_var += t.itl_mean2 * (output_tokens_std * output_tokens_std)
    e2e_var = np.add(ttft_var, dec_var, out=var[1])
    return LatencyPrediction(
        ttft_mean_s=ttft_mean,
        ttft_var_s2=ttft_var,
        e2e_mean_s=e2e_mean,
        e2e_var_s2=e2e_var,
        itl_std_s=itl_sd,
        _rows=(mean, var),
    )


class _LoadTerms:
    """Request-independent terms of ``predict_latency`` for one ``ReplicaLoad``
    (independent of the queue wait too: ``ReplicaLoad.with_queue_wait`` shares them)."""

    __slots__ = (
        "_offset",
        "ar_factor",
        "inv_capacity",
        "itl_mean2",
        "kv_from",
        "log1p_kv_from",
        "log_h",
        "log_sp2_from",
        "log_var_obs",
        "n",
        "observed",
        "prefill_var_per_tok2",
        "sp_from2",
    )

    def __init__(self, load: ReplicaLoad) -> None:
        self.n = load.size
        sp_from = np.maximum(load.sigma_prefill_s, _EPS)
        self.sp_from2 = sp_from * sp_from
        self.log_sp2_from = np.log(self.sp_from2)
        self.kv_from = np.clip(load.kv_pressure, 0.0, 1.0)
        self.log1p_kv_from = np.log1p(self.kv_from)
        self.inv_capacity = 1.0 / np.maximum(load.kv_capacity_tokens, 1.0)
        self.log_h = np.log(np.maximum(load.heterogeneity, 1.0))
        self.prefill_var_per_tok2 = (load.prefill_cv * load.prefill_s_per_token) ** 2
        self.observed = load.itl_std_s > 0
        with np.errstate(divide="ignore"):  # σ_obs = 0 → −inf, replaced by the model
            self.log_var_obs = np.log(load.itl_std_s**2)
        rho = np.clip(load.itl_autocorr, -0.95, 0.95)
        self.ar_factor = (1.0 + rho) / (1.0 - rho)
        self.itl_mean2 = load.itl_mean_s**2
        self._offset: tuple[tuple[float, float, float, float], FloatArray] | None = None

    def log_var_offset(self, theta: FloatArray) -> FloatArray:
        """Per-replica offset of log σ_ITL² (see predict_latency), cached per θ."""
        off = self._offset
        key = (float(theta[0]), float(theta[1]), float(theta[2]), float(theta[3]))
        if off is None or off[0] != key:
            t0, a, b, t3 = key
            shift = a * self.log_sp2_from + (2.0 * b) * self.log1p_kv_from
            observed = self.log_var_obs - shift
            model = 2.0 * t0 + (2.0 * t3) * self.log_h
            off = self._offset = (key, np.where(self.observed, observed, model))
        return off[1]
