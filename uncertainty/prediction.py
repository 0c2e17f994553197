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


def _lognormal_cdf_log_inplace(mean: FloatArray, var: FloatArray, log_x: FloatArray) -> FloatArray:
    # _lognormal_cdf_log, operation for operation (same results), in place:
    # ``var`` is overwritten, ``mean`` is kept
    m = np.maximum(mean, _EPS)
    s2 = m * m
    np.divide(var, s2, out=s2)
    np.log1p(s2, out=s2)
    z = np.log(m, out=m)
    np.subtract(log_x, z, out=z)
    z += np.multiply(0.5, s2, out=var)
    np.sqrt(s2, out=s2)
    np.maximum(s2, _EPS, out=s2)
    z /= s2
    out: FloatArray = ndtr(z, out=z)
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
    is ~20 array operations (treat a ``ReplicaLoad``'s arrays as immutable).
    A router that only needs P(meet SLO) calls ``predict_slo_probability``,
    which skips building this object.
    """
    _check_lengths(prompt_tokens, output_tokens, output_tokens_std)
    rows, itl_var = _predict_rows(
        model, load, float(prompt_tokens), output_tokens, output_tokens_std
    )
    mean, var = rows[0:2], rows[2:4]
    return LatencyPrediction(
        ttft_mean_s=mean[0],
        ttft_var_s2=var[0],
        e2e_mean_s=mean[1],
        e2e_var_s2=var[1],
        itl_std_s=np.sqrt(itl_var),
        _rows=(mean, var),
    )


def predict_slo_probability(
    model: CascadeModel,
    load: ReplicaLoad,
    prompt_tokens: int,
    output_tokens: float,
    output_tokens_std: float,
    ttft_slo_s: float,
    e2e_slo_s: float,
) -> tuple[FloatArray, FloatArray]:
    """(P(TTFT ≤ ``ttft_slo_s`` and E2E ≤ ``e2e_slo_s``), E2E mean) per replica:
    the same numbers, computed by the same operations in the same order, as
    ``predict_latency(...).prob_within(ttft_slo_s, e2e_slo_s)`` and its
    ``e2e_mean_s``, without building the ``LatencyPrediction`` (the router's
    per-request path: ~30 array operations, most of them in place).

    Raises ``ValueError`` for bad lengths (as ``predict_latency``) or an SLO ≤ 0.
    """
    _check_lengths(prompt_tokens, output_tokens, output_tokens_std)
    if not (ttft_slo_s > 0 and e2e_slo_s > 0):
        raise ValueError(f"SLO must be > 0 seconds, got {ttft_slo_s!r}, {e2e_slo_s!r}")
    rows, _ = _predict_rows(model, load, float(prompt_tokens), output_tokens, output_tokens_std)
    log_x = np.array((math.log(ttft_slo_s), math.log(e2e_slo_s)))[:, None]
    both = _lognormal_cdf_log_inplace(rows[0:2], rows[2:4], log_x)
    out: FloatArray = both[0] * both[1]
    return out, rows[1]


def _check_lengths(prompt_tokens: int, output_tokens: float, output_tokens_std: float) -> None:
    if prompt_tokens < 0 or not math.isfinite(output_tokens) or output_tokens < 1:
        raise ValueError(
            f"request lengths: prompt_tokens={prompt_tokens!r} must be >= 0 and "
            f"output_tokens={output_tokens!r} must be >= 1"
        )
    if not math.isfinite(output_tokens_std) or output_tokens_std < 0:
        raise ValueError(f"output_tokens_std={output_tokens_std!r} must be finite and >= 0")


def _predict_rows(
    model: CascadeModel, load: ReplicaLoad, p: float, output_tokens: float, output_tokens_std: float
) -> tuple[FloatArray, FloatArray]:
    """A fresh (6, R) array whose rows 0..3 are TTFT mean, E2E mean, TTFT
    variance, E2E variance (rows 4, 5 are scratch), and the decode ITL variance.

    The affine terms of all rows are one multiply of the cached coefficient
    block by a column of request scalars; each product is the same IEEE
    operation as in the plain formula, so results equal the formulas bit for bit.
    """
    t = load._terms
    theta = model._theta
    w, off = t.cascade(theta)
    pp = p * p
    # rows: p·c, p·c, P²·(CV·c)², P²·(CV·c)², P²·(CV·c)², (P + L)/capacity
    rows = t.lin * np.array((p, p, pp, pp, pp, p + output_tokens))[:, None]
    qm = load.queue_wait_mean_s
    rows[0:2] += qm  # TTFT mean = queue wait + P·c (the E2E row gets decode below)
    rows[2:4] += load.queue_wait_std_s**2  # TTFT variance = σ_q² + (CV·P·c)²
    # The cascade: this request's prefill joins the prefill steps that running
    # decodes share (σ_p² → σ_p² + σ_prefill²), and its tokens raise KV pressure.
    cas = rows[4:6]
    cas += t.cas_from  # (σ_p,from² + σ_prefill², kv_from + (P + L)/capacity)
    np.minimum(cas[1], 1.0, out=cas[1])
    np.log(cas[0], out=cas[0])
    np.log1p(cas[1], out=cas[1])
    cas *= w  # (a·log σ_p,to², 2b·log(1 + kv_to))
    # Decode ITL variance with this request admitted, in one formula for every
    # replica (the two cases of the docstring share their coefficients):
    #   observed σ: σ_obs² · exp(2·log_ratio) = exp(log σ_obs² − a·log σ_p,from²
    #               − 2b·log(1+kv_from) + a·log σ_p,to² + 2b·log(1+kv_to))
    #   none yet:   σ_model² = exp(2θ0 + 2θ3·log h + a·log σ_p,to² + 2b·log(1+kv_to))
    # so only a per-replica offset differs; it is cached per (load, θ).
    itl_var = off + cas[0]
    itl_var += cas[1]
    np.exp(itl_var, out=itl_var)

    n_dec = max(output_tokens - 1.0, 0.0)
    e2e_mean = rows[1]
    e2e_mean += n_dec * load.itl_mean_s
    # summing L − 1 AR(1) ITLs inflates their variance by (1 + ρ)/(1 − ρ)
    dec_var = itl_var * (n_dec * t.ar_factor)
    if output_tokens_std > 0:
        dec_var += t.itl_mean2 * (output_tokens_std * output_tokens_std)
    rows[3] += dec_var
    return rows, itl_var


class _LoadTerms:
    """Request-independent terms of ``predict_latency`` for one ``ReplicaLoad``
    (independent of the queue wait too: ``ReplicaLoad.with_queue_wait`` shares them)."""

    __slots__ = (
        "_cascade",
        "ar_factor",
        "cas_from",
        "itl_mean2",
        "lin",
        "log1p_kv_from",
        "log_h",
        "log_sp2_from",
        "log_var_obs",
        "n",
        "observed",
    )

    def __init__(self, load: ReplicaLoad) -> None:
        self.n = n = load.size
        sp_from = np.maximum(load.sigma_prefill_s, _EPS)
        sp_from2 = sp_from * sp_from
        self.log_sp2_from = np.log(sp_from2)
        kv_from = np.clip(load.kv_pressure, 0.0, 1.0)
        self.log1p_kv_from = np.log1p(kv_from)
        inv_capacity = 1.0 / np.maximum(load.kv_capacity_tokens, 1.0)
        prefill_var_per_tok2 = (load.prefill_cv * load.prefill_s_per_token) ** 2
        # coefficients of the request scalars (see _predict_rows), one row each
        self.lin = np.empty((6, n))
        self.lin[0:2] = load.prefill_s_per_token
        self.lin[2:5] = prefill_var_per_tok2
        self.lin[5] = inv_capacity
        self.cas_from = np.stack((sp_from2, kv_from))
        self.log_h = np.log(np.maximum(load.heterogeneity, 1.0))
        self.observed = load.itl_std_s > 0
        with np.errstate(divide="ignore"):  # σ_obs = 0 → −inf, replaced by the model
            self.log_var_obs = np.log(load.itl_std_s**2)
        rho = np.clip(load.itl_autocorr, -0.95, 0.95)
        self.ar_factor = (1.0 + rho) / (1.0 - rho)
        self.itl_mean2 = load.itl_mean_s**2
        for arr in (self.lin, self.cas_from, self.ar_factor, self.itl_mean2):
            arr.setflags(write=False)
        self._cascade: tuple[bytes, FloatArray, FloatArray] | None = None

    def cascade(self, theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        """((2, 1) column (a, 2b), per-replica offset of log σ_ITL²) for the
        cascade coefficients θ (see _predict_rows), cached per θ."""
        key = theta.tobytes()
        c = self._cascade
        if c is None or c[0] != key:
            t0, a, b, t3 = (float(theta[0]), float(theta[1]), float(theta[2]), float(theta[3]))
            shift = a * self.log_sp2_from + (2.0 * b) * self.log1p_kv_from
            observed = self.log_var_obs - shift
            model = 2.0 * t0 + (2.0 * t3) * self.log_h
            w = np.array(((a,), (2.0 * b,)))
            off = np.where(self.observed, observed, model)
            w.setflags(write=False)
            off.setflags(write=False)
            c = self._cascade = (key, w, off)
        return c[1], c[2]
