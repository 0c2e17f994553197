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
# ReplicaLoad fields that are times, costs, CVs or σs: a negative one would make a
# predicted mean or variance negative
_NON_NEGATIVE = frozenset(
    (
        "queue_wait_mean_s",
        "queue_wait_std_s",
        "prefill_s_per_token",
        "prefill_cv",
        "itl_mean_s",
        "itl_std_s",
        "sigma_prefill_s",
        "kv_capacity_tokens",
    )
)


@dataclass(frozen=True)
class ReplicaLoad:
    """State of R candidate replicas, one array entry per replica (shape (R,)).

    Units: seconds, tokens, fractions. All arrays must have the same length and
    be finite; times, costs, CVs and σs must be >= 0. ``ValueError`` names the
    first offending field and index.
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
            if name in _NON_NEGATIVE and arr.size and arr.min() < 0:
                i = int(np.argmin(arr))
                raise ValueError(f"ReplicaLoad.{name}[{i}] = {float(arr[i])!r}: must be >= 0")

    @property
    def size(self) -> int:
        return int(np.shape(self.itl_mean_s)[0])

    @cached_property
    def _terms(self) -> _LoadTerms:
        # computed on first use and kept: a router predicts many requests
        # against the same load between two snapshots
        return _LoadTerms(self)

    @property
    def _queue_var(self) -> FloatArray:
        # the queue wait's variance, squared once per load (not per request).
        # Cached by hand: functools.cached_property takes a lock on every first
        # access, and a router's per-request load is always a first access
        v: FloatArray | None = self.__dict__.get("_qvar")
        if v is None:
            v = np.square(self.queue_wait_std_s)
            v.setflags(write=False)
            self.__dict__["_qvar"] = v
        return v

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
            # min() is NaN if any entry is: one reduction checks both rules
            if arr.size and not (arr.min() >= 0.0 and arr.max() < math.inf):
                raise ValueError(f"ReplicaLoad.{name}: must be finite and >= 0")
        new = object.__new__(ReplicaLoad)
        new.__dict__.update(self.__dict__)
        new.__dict__.pop("_qvar", None)  # made from the old queue wait
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
    # Set by predict_latency: rows 0..6 of its prediction block (see
    # _predict_block), of which the four fields above are views, so prob_within
    # evaluates both CDFs in one pass by the very operations of
    # predict_slo_probability. None for a prediction built by hand.
    _rows: FloatArray | None = field(default=None, repr=False, compare=False)

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
            rows = self._rows.copy()
            rows[5] = math.log(ttft_slo_s)
            rows[6] = math.log(e2e_slo_s)
            both = _slo_cdf_pair(rows)
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


# Weights of the CDF numerators over block rows 0..6 (see _slo_cdf_pair)
_CDF_WEIGHTS = np.array(
    (
        (-1.0, 0.0, 0.0, 0.5, 0.0, 1.0, 0.0),
        (0.0, -1.0, 0.0, 0.0, 0.5, 0.0, 1.0),
    )
)
_CDF_WEIGHTS.setflags(write=False)


def _slo_cdf_pair(block: FloatArray) -> FloatArray:
    """P(TTFT ≤ x_t) and P(E2E ≤ x_e) (a (2, R) array) under lognormals matched to
    the means (rows 0, 1) and variances (rows 3, 4) of a prediction block, with
    log x_t and log x_e in rows 5, 6 (see _predict_block); computed in place:
    rows 0, 1, 3, 4 are destroyed.

    With s² = log(1 + v/m²), the lognormal CDF is Φ(z), z = (log x − log m +
    s²/2)/s. Rows 0, 1 become log m and rows 3, 4 s²; the numerators are one
    product of constant weights with rows 0..6: 9 array operations in all (the
    router's hot path counts them). Means and variances are > 0 by construction
    (_LoadTerms adds _MEAN_FLOOR and _VAR_FLOOR), so nothing needs clamping.
    """
    m = block[0:2]
    v = block[3:5]
    m2 = m * m
    v /= m2
    np.log1p(v, out=v)  # log1p: v/m² is often far below 1 (log(1 + x) would lose it)
    np.log(m, out=m)
    z = np.dot(_CDF_WEIGHTS, block[0:7])
    np.sqrt(v, out=v)
    z /= v
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

    Means carry a floor of 1e-150 s and variances one of 1e-24 s² (so that the
    lognormal CDF needs no clamping); both are far below any real latency.

    Hot path (a router calls it per request): the request-independent terms of
    ``load`` are computed once per ``ReplicaLoad`` and cached on it (treat a
    ``ReplicaLoad``'s arrays as immutable). A router that only needs P(meet SLO)
    calls ``predict_slo_probability``, which skips building this object.
    """
    _check_lengths(prompt_tokens, output_tokens, output_tokens_std)
    block = _predict_block(
        model, load, float(prompt_tokens), output_tokens, output_tokens_std, 0.0, 0.0
    )
    # decode ITL σ with this request admitted (the hot path skips it: it only
    # needs the summed decode variance, already in the E2E variance row)
    w, off, _ = load._terms.cascade(model._theta)
    itl_var = np.dot(w[:2], block[_FEATURES])
    itl_var += off
    rows = block[0:7]
    return LatencyPrediction(
        ttft_mean_s=rows[0],
        ttft_var_s2=rows[3],
        e2e_mean_s=rows[2],
        e2e_var_s2=rows[4],
        itl_std_s=np.sqrt(np.exp(itl_var)),
        _rows=rows,
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
    per-request path: ~20 array operations, most of them in place).

    Raises ``ValueError`` for bad lengths (as ``predict_latency``) or an SLO ≤ 0.
    """
    _check_lengths(prompt_tokens, output_tokens, output_tokens_std)
    if not (ttft_slo_s > 0 and e2e_slo_s > 0):
        raise ValueError(f"SLO must be > 0 seconds, got {ttft_slo_s!r}, {e2e_slo_s!r}")
    block = _predict_block(
        model,
        load,
        float(prompt_tokens),
        output_tokens,
        output_tokens_std,
        math.log(ttft_slo_s),
        math.log(e2e_slo_s),
    )
    both = _slo_cdf_pair(block)
    out: FloatArray = both[0] * both[1]
    return out, block[2]


def _check_lengths(prompt_tokens: int, output_tokens: float, output_tokens_std: float) -> None:
    if prompt_tokens < 0 or not math.isfinite(output_tokens) or output_tokens < 1:
        raise ValueError(
            f"request lengths: prompt_tokens={prompt_tokens!r} must be >= 0 and "
            f"output_tokens={output_tokens!r} must be >= 1"
        )
    if not math.isfinite(output_tokens_std) or output_tokens_std < 0:
        raise ValueError(f"output_tokens_std={output_tokens_std!r} must be finite and >= 0")


# The prediction block (see _predict_block), one row per quantity, R columns:
#   0 TTFT mean   1 E2E mean   2 E2E mean (kept for the caller)
#   3 TTFT variance   4 E2E variance   5 log x_t   6 log x_e (the SLOs)
#   7 σ_p,to² and 8 1 + kv_to (→ their logs)   9 log of the decode term's offset
# Rows 0, 1, 3, 4 become the CDFs' log terms (_slo_cdf_pair).
_N_ROWS = 10
_FEATURES = slice(7, 9)
_MEAN_FLOOR = 1e-150  # s: keeps every mean > 0 (m² stays a normal double)
_VAR_FLOOR = 1e-24  # s²: keeps every variance > 0 (the lognormal σ > 0)
_LOG_ZERO = -1e300  # "log 0" for the decode term of a one-token request: exp → 0

# The per-replica basis (rows of _LoadTerms.basis): 0 ones, 1 prefill s/token c,
# 2 ITL mean, 3 (CV·c)², 4 ITL², 5 σ_p,from², 6 1 + kv_from, 7 1/capacity,
# 8 off + log AR (see _LoadTerms.cascade). Block row j = Σ_k mix[j, k]·basis[k];
# the template holds the constant entries, _MIX_SLOTS the request's.
_MIX_TEMPLATE = np.zeros((_N_ROWS, 9))
_MIX_TEMPLATE[0:3, 0] = _MEAN_FLOOR
_MIX_TEMPLATE[3:5, 0] = _VAR_FLOOR
_MIX_TEMPLATE[7, 5] = 1.0  # σ_p,to² = σ_p,from² + P²·(CV·c)²
_MIX_TEMPLATE[8, 6] = 1.0  # 1 + kv_to = 1 + kv_from + (P + L)/capacity
_MIX_TEMPLATE[9, 8] = 1.0  # off + log AR + log(L − 1)
_MIX_TEMPLATE.setflags(write=False)
_MIX_SLOTS = np.ravel_multi_index(
    (
        (0, 1, 2, 1, 2, 3, 4, 7, 4, 5, 6, 8, 9),  # block rows
        (1, 1, 1, 2, 2, 3, 3, 3, 4, 0, 0, 7, 0),  # basis rows
    ),
    _MIX_TEMPLATE.shape,
)  # for P ×3, L − 1 ×2, P² ×3, σ_L², log x_t, log x_e, P + L, log(L − 1)


def _predict_block(
    model: CascadeModel,
    load: ReplicaLoad,
    p: float,
    output_tokens: float,
    output_tokens_std: float,
    log_ttft_slo: float,
    log_e2e_slo: float,
) -> FloatArray:
    """A fresh (10, R) prediction block (rows listed above) for prompt length
    P = ``p``, expected output length L = ``output_tokens`` and the SLOs' logs.

    Every row is affine in the request's scalars: the block is one product of a
    (10, 9) mixing matrix of those scalars (``_MIX_TEMPLATE``) with the cached
    (9, R) per-replica basis (see _LoadTerms). The decode variance, a product of
    powers, is the exp of one dot product of logs:

        Var_dec = (L − 1)·AR·σ_ITL²,   σ_ITL² = exp(off + a·log σ_p,to² + 2b·log(1 + kv_to))

    so log Var_dec = a·log σ_p,to² + 2b·log(1 + kv_to) + [off + log AR + log(L − 1)],
    the bracket being row 9 of the product. ~11 array operations in all: on a
    router's hot path the time is the number of numpy calls, not the arithmetic.
    """
    t = load._terms
    w, _, basis = t.cascade(model._theta)
    n_dec = max(output_tokens - 1.0, 0.0)
    log_n = math.log(n_dec) if n_dec > 0 else _LOG_ZERO
    pp = p * p
    mix = _MIX_TEMPLATE.copy()
    mix.flat[_MIX_SLOTS] = (
        p, p, p, n_dec, n_dec, pp, pp, pp, output_tokens_std**2,
        log_ttft_slo, log_e2e_slo, p + output_tokens, log_n,
    )  # fmt: skip
    block: FloatArray = np.dot(mix, basis)
    block[0:3] += load.queue_wait_mean_s
    block[3:5] += load._queue_var
    # The cascade: this request's prefill joins the prefill steps that running
    # decodes share (σ_p² → σ_p² + σ_prefill², row 7), and its tokens raise KV
    # pressure (row 8, capped at a full cache: 1 + kv ≤ 2).
    kv1 = block[8]
    np.minimum(kv1, 2.0, out=kv1)
    feats = block[_FEATURES]
    np.log(feats, out=feats)
    # Decode ITL variance with this request admitted, in one formula for every
    # replica (only the offset differs by whether σ_ITL was observed; _LoadTerms):
    #   observed σ: σ_obs² · (σ_p,to²/σ_p,from²)^a · ((1+kv_to)/(1+kv_from))^2b
    #   none yet:   σ_model² = exp(2θ0 + 2θ3·log h) · σ_p,to^2a · (1+kv_to)^2b
    # summed over L − 1 AR(1)-correlated tokens (variance × (1 + ρ)/(1 − ρ)),
    # plus ITL²·σ_L² for the output length's uncertainty (in row 4 already).
    dec = np.dot(w, block[7:10])
    np.exp(dec, out=dec)
    block[4] += dec
    return block


class _LoadTerms:
    """Request-independent terms of ``predict_latency`` for one ``ReplicaLoad``
    (independent of the queue wait too: ``ReplicaLoad.with_queue_wait`` shares them)."""

    __slots__ = (
        "_cascade",
        "ar_factor",
        "base_basis",
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
        c = load.prefill_s_per_token
        itl = load.itl_mean_s
        basis = np.empty((9, n))  # rows as listed above _MIX_TEMPLATE
        basis[0] = 1.0
        basis[1] = c
        basis[2] = itl
        basis[3] = (load.prefill_cv * c) ** 2
        basis[4] = itl * itl
        basis[5] = sp_from2
        basis[6] = 1.0 + kv_from
        basis[7] = 1.0 / np.maximum(load.kv_capacity_tokens, 1.0)
        basis[8] = 0.0  # set per θ by cascade()
        self.base_basis = basis
        self.log_h = np.log(np.maximum(load.heterogeneity, 1.0))
        self.observed = load.itl_std_s > 0
        # σ_obs = 0 means "unknown" (the model's offset is used instead); the
        # floor keeps a subnormal σ_obs (σ² = 0) finite: the basis feeds a
        # matrix product, where one −inf would turn every row into NaN
        self.log_var_obs = np.log(np.maximum(load.itl_std_s**2, 1e-300))
        rho = np.clip(load.itl_autocorr, -0.95, 0.95)
        self.ar_factor = (1.0 + rho) / (1.0 - rho)
        self._cascade: tuple[bytes, FloatArray, FloatArray, FloatArray] | None = None

    def cascade(self, theta: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """For cascade coefficients θ = (θ0, a, b, θ3), cached per θ: the weights
        (a, 2b, 1) of block rows 7..9, the per-replica offset ``off`` of log σ_ITL²
        (see _predict_block), and the basis with off + log AR in its row 8."""
        key = theta.tobytes()
        c = self._cascade
        if c is None or c[0] != key:
            t0, a, b, t3 = (float(theta[0]), float(theta[1]), float(theta[2]), float(theta[3]))
            shift = a * self.log_sp2_from + (2.0 * b) * self.log1p_kv_from
            observed = self.log_var_obs - shift
            model = 2.0 * t0 + (2.0 * t3) * self.log_h
            off = np.where(self.observed, observed, model)
            basis = self.base_basis.copy()
            basis[8] = off + np.log(self.ar_factor)
            w = np.array((a, 2.0 * b, 1.0))
            for arr in (w, off, basis):
                arr.setflags(write=False)
            c = self._cascade = (key, w, off, basis)
        return c[1], c[2], c[3]
