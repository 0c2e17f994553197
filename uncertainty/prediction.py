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
import threading
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
    def _queue_moments(self) -> FloatArray:
        # (2, R): the queue wait's mean and variance, the last two rows of the
        # prediction's basis (see _predict_block). Made once per load; cached by
        # hand: functools.cached_property takes a lock on every first access, and
        # a router's per-request load is always a first access
        q: FloatArray | None = self.__dict__.get("_qmom")
        if q is None:
            q = np.stack((self.queue_wait_mean_s, np.square(self.queue_wait_std_s)))
            q.setflags(write=False)
            self.__dict__["_qmom"] = q
        return q

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
        return self._with_queue(mean_s, std_s, None)

    def with_added_queue(self, extra_mean_s: FloatArray, extra_std_s: FloatArray) -> ReplicaLoad:
        """This load with independent extra work ahead of the request (e.g.
        requests routed since the snapshot): queue-wait mean + ``extra_mean_s``,
        variance + ``extra_std_s``². Both arrays (s, shape (R,)) must be finite
        and >= 0 (``ValueError`` otherwise). The router's per-request refresh:
        one (2, R) buffer holds the new mean and variance, which the prediction
        reads directly (no square root and re-square)."""
        shape = np.shape(self.itl_mean_s)
        q = np.empty((2, *shape))
        try:
            q[0] = extra_mean_s
            q[1] = extra_std_s
        except ValueError:
            raise ValueError(
                f"ReplicaLoad.with_added_queue: extra arrays must have shape {shape}"
            ) from None
        # min() is NaN if any entry is: two reductions check every rule
        if q.size and not (q.min() >= 0.0 and q.max() < math.inf):
            raise ValueError("ReplicaLoad.with_added_queue: extra work must be finite and >= 0")
        return self._added_queue(q)

    def _added_queue(self, q: FloatArray) -> ReplicaLoad:
        # with_added_queue after validation: q (2, R) holds the extra mean and σ,
        # finite and >= 0, and becomes the new load's queue moments (owned)
        base = self._queue_moments
        q[0] += base[0]
        q[1] *= q[1]
        q[1] += base[1]
        q.setflags(write=False)
        return self._with_queue(q[0], np.sqrt(q[1]), q)

    def _with_queue(
        self, mean_s: FloatArray, std_s: FloatArray, moments: FloatArray | None
    ) -> ReplicaLoad:
        # a copy sharing everything but the queue wait (validated by the caller)
        new = object.__new__(ReplicaLoad)
        new.__dict__.update(self.__dict__)
        new.__dict__.pop("_qmom", None)  # made from the old queue wait
        if moments is not None:
            new.__dict__["_qmom"] = moments
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
    # Set by predict_latency: its raw prediction block and the cascade weights
    # (see _predict_block), so that prob_within evaluates both CDFs by the very
    # operations of predict_slo_probability. None for a prediction built by hand.
    _block: tuple[FloatArray, FloatArray] | None = field(default=None, repr=False, compare=False)

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
        if ttft_slo_s is not None and e2e_slo_s is not None and self._block is not None:
            _check_slo(ttft_slo_s)
            _check_slo(e2e_slo_s)
            raw, w = self._block
            ws = _workspace(raw.shape[1])
            np.copyto(ws.block, raw)
            ws.block[_LOG_SLO_TTFT] = math.log(ttft_slo_s)
            ws.block[_LOG_SLO_E2E] = math.log(e2e_slo_s)
            return _slo_probability(ws, w)
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

    Means carry a floor of 1e-150 s and variances one of 1e-24 s² (so that the
    lognormal CDF needs no clamping); both are far below any real latency.

    Hot path (a router calls it per request): the request-independent terms of
    ``load`` are computed once per ``ReplicaLoad`` and cached on it (treat a
    ``ReplicaLoad``'s arrays as immutable). A router that only needs P(meet SLO)
    calls ``predict_slo_probability``, which skips building this object.
    """
    _check_lengths(prompt_tokens, output_tokens, output_tokens_std)
    ws, w = _predict_block(model, load, float(prompt_tokens), output_tokens, output_tokens_std)
    raw = ws.block.copy()
    raw.setflags(write=False)
    # the decode term, as _slo_probability computes it (out of place here: the
    # raw block is kept for prob_within): a·log σ_p,to² + 2b·log(1 + kv_to) ...
    logs = np.log(np.stack((raw[_SIGMA_P2], np.minimum(raw[_KV1], _KV1_CAP))))
    cascade_log = np.dot(w[:2], logs)
    # ... + off + log AR + log n for the summed decode variance, and + off alone
    # for the ITL variance with this request admitted
    dec = np.exp(cascade_log + raw[_DEC_OFFSET])
    _, off, _ = load._terms.cascade(model._theta)
    itl_var = np.exp(cascade_log + off)
    return LatencyPrediction(
        ttft_mean_s=raw[_TTFT_MEAN],
        ttft_var_s2=raw[_TTFT_VAR],
        e2e_mean_s=raw[_E2E_MEAN_KEPT],
        e2e_var_s2=raw[_E2E_VAR] + dec,
        itl_std_s=np.sqrt(itl_var),
        _block=(raw, w),
    )


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
    ws, w = _predict_block(
        model,
        load,
        float(prompt_tokens),
        output_tokens,
        output_tokens_std,
        math.log(ttft_slo_s),
        math.log(e2e_slo_s),
    )
    prob = _slo_probability(ws, w)
    return prob, np.add(ws.e2e_mean, e2e_shift_s)


def _check_lengths(prompt_tokens: int, output_tokens: float, output_tokens_std: float) -> None:
    if not (0 <= prompt_tokens < math.inf and 1.0 <= output_tokens < math.inf):
        raise ValueError(
            f"request lengths: prompt_tokens={prompt_tokens!r} must be >= 0 and "
            f"output_tokens={output_tokens!r} must be >= 1"
        )
    if not 0.0 <= output_tokens_std < math.inf:
        raise ValueError(f"output_tokens_std={output_tokens_std!r} must be finite and >= 0")


# ---- the prediction block ----------------------------------------------------------
#
# Per replica, a basis of 11 rows (B, shape (11, R)): rows 0..8 from _LoadTerms
# (request- and queue-independent, row 8 per θ), rows 9, 10 the load's queue wait:
#   0 ones   1 prefill s/token c   2 ITL mean   3 (CV·c)²   4 ITL²   5 σ_p,from²
#   6 1 + kv_from   7 1/capacity   8 off + log AR (see _LoadTerms.cascade)
#   9 queue-wait mean   10 queue-wait variance
# Per request, a (10, 11) mixing matrix M of its scalars (P prompt tokens, L
# expected output tokens, n = L − 1, σ_L, the SLOs' logs); the block M·B has:
_TTFT_MEAN = 0  # floor + queue + P·c
_E2E_MEAN = 1  # floor + queue + P·c + n·ITL
_SIGMA_P2 = 2  # σ_p,to² = σ_p,from² + P²·(CV·c)²
_KV1 = 3  # 1 + kv_to = 1 + kv_from + (P + L)/capacity
_DEC_OFFSET = 4  # off + log AR + log n
_TTFT_VAR = 5  # floor + queue var + P²·(CV·c)²
_E2E_VAR = 6  # the same + σ_L²·ITL² (the decode term is added later)
_LOG_SLO_TTFT = 7  # log x_t
_LOG_SLO_E2E = 8  # log x_e
_E2E_MEAN_KEPT = 9  # row 1 again: rows 0..3 are overwritten by their logs
_MEAN_FLOOR = 1e-150  # s: keeps every mean > 0 (m² stays a normal double)
_VAR_FLOOR = 1e-24  # s²: keeps every variance > 0 (the lognormal σ > 0)
_LOG_ZERO = -1e300  # "log 0" for the decode term of a one-token request: exp → 0

_MIX_TEMPLATE = np.zeros((10, 11))
for _row in (_TTFT_MEAN, _E2E_MEAN, _E2E_MEAN_KEPT):
    _MIX_TEMPLATE[_row, 0] = _MEAN_FLOOR
    _MIX_TEMPLATE[_row, 9] = 1.0  # + queue-wait mean
for _row in (_TTFT_VAR, _E2E_VAR):
    _MIX_TEMPLATE[_row, 0] = _VAR_FLOOR
    _MIX_TEMPLATE[_row, 10] = 1.0  # + queue-wait variance
_MIX_TEMPLATE[_SIGMA_P2, 5] = 1.0
_MIX_TEMPLATE[_KV1, 6] = 1.0
_MIX_TEMPLATE[_DEC_OFFSET, 8] = 1.0
_MIX_TEMPLATE.setflags(write=False)
del _row
# flat indices of the request's entries, in the order _predict_block fills them:
# P ×3, n ×2, P² ×3, σ_L², (P + L), log n, log x_t, log x_e
_MIX_SLOTS = np.ravel_multi_index(
    (
        (_TTFT_MEAN, _E2E_MEAN, _E2E_MEAN_KEPT, _E2E_MEAN, _E2E_MEAN_KEPT,
         _SIGMA_P2, _TTFT_VAR, _E2E_VAR, _E2E_VAR, _KV1, _DEC_OFFSET,
         _LOG_SLO_TTFT, _LOG_SLO_E2E),
        (1, 1, 1, 2, 2, 3, 3, 3, 4, 7, 0, 0, 0),
    ),
    _MIX_TEMPLATE.shape,
)  # fmt: skip

# z numerators of the two CDFs over block rows 0..8 once rows 0, 1 hold log m
# and rows 5, 6 hold s² (see _slo_probability): log x − log m + s²/2
_CDF_WEIGHTS = np.zeros((2, 9))
_CDF_WEIGHTS[0, (_TTFT_MEAN, _TTFT_VAR, _LOG_SLO_TTFT)] = (-1.0, 0.5, 1.0)
_CDF_WEIGHTS[1, (_E2E_MEAN, _E2E_VAR, _LOG_SLO_E2E)] = (-1.0, 0.5, 1.0)
_CDF_WEIGHTS.setflags(write=False)
_KV1_CAP = np.array(2.0)  # a full cache: 1 + kv ≤ 2 (a 0-d array: no scalar conversion)


def _predict_block(
    model: CascadeModel,
    load: ReplicaLoad,
    p: float,
    output_tokens: float,
    output_tokens_std: float,
    log_ttft_slo: float = 0.0,
    log_e2e_slo: float = 0.0,
) -> tuple[_Workspace, FloatArray]:
    """(this thread's workspace for R replicas, its ``block`` holding the raw
    (10, R) prediction block; the cascade weights w = (a, 2b, 1)) for prompt
    length P = ``p``, expected output length L = ``output_tokens`` and the SLOs'
    logs (rows listed above). Every row is affine in the request's scalars, so
    the block is one matrix product: on a router's hot path the time is the
    number of numpy calls, not the arithmetic. The block is valid until this
    thread's next prediction for R replicas."""
    w, _, basis = load._terms.cascade(model._theta)
    ws = _workspace(basis.shape[1])
    n_dec = max(output_tokens - 1.0, 0.0)
    pp = p * p
    # the workspace's mix holds the template; only the request's slots change
    ws.mix.put(
        _MIX_SLOTS,
        (
            p, p, p, n_dec, n_dec, pp, pp, pp, output_tokens_std**2, p + output_tokens,
            math.log(n_dec) if n_dec > 0 else _LOG_ZERO, log_ttft_slo, log_e2e_slo,
        ),
    )  # fmt: skip
    np.dot(ws.mix, np.concatenate((basis, load._queue_moments)), out=ws.block)
    return ws, w


def _slo_probability(ws: _Workspace, w: FloatArray) -> FloatArray:
    """P(TTFT ≤ x_t)·P(E2E ≤ x_e) per replica (a fresh array) from the raw
    prediction block in ``ws`` (SLO logs in its rows 7, 8), computed in place:
    rows 0..6 are destroyed.

    The decode variance this request will see, a product of powers, is the exp
    of one dot product of logs:

        Var_dec = n·AR·σ_ITL²,   σ_ITL² = exp(off + a·log σ_p,to² + 2b·log(1 + kv_to))

    so log Var_dec = (a, 2b, 1)·(log σ_p,to², log(1 + kv_to), off + log AR + log n),
    the last being block row 4. Its prefill joins the prefill steps the running
    decodes share (σ_p² grows) and its tokens raise KV pressure (capped at a full
    cache). ``off`` is the observed σ_ITL² divided by the model's value at the
    current state, or the model's own term for a replica with no ITL history:
    one formula for every replica (_LoadTerms.cascade).

    Both CDFs are lognormal matched to the means m and variances v: Φ(z),
    z = (log x − log m + s²/2)/s, s² = log(1 + v/m²). The logs of the means and
    of the cascade features are one call (rows 0..3); the numerators one product
    of constant weights with rows 0..8. 13 array operations, on views made when
    the workspace was; means and variances are > 0 by construction (the
    floors), so nothing needs clamping.
    """
    np.multiply(ws.means, ws.means, out=ws.m2)
    np.minimum(ws.kv1, _KV1_CAP, out=ws.kv1)
    np.log(ws.logs, out=ws.logs)  # log m_t, log m_e, log σ_p,to², log(1 + kv_to)
    dec = np.dot(w, ws.decode_features, out=ws.dec)
    np.exp(dec, out=dec)
    np.add(ws.e2e_var, dec, out=ws.e2e_var)
    v = ws.variances
    np.divide(v, ws.m2, out=v)
    np.log1p(v, out=v)  # log1p: v/m² is often far below 1 (log(1 + x) would lose it)
    z = np.dot(_CDF_WEIGHTS, ws.cdf_rows, out=ws.z)
    np.sqrt(v, out=v)
    np.divide(z, v, out=z)
    ndtr(z, out=z)
    out: FloatArray = np.multiply(ws.z_ttft, ws.z_e2e)
    return out


class _Workspace:
    """Buffers of one thread's predictions for R replicas, and the views of them
    that _slo_probability uses (made once: a slice costs as much as a small
    array operation). Per thread, so concurrent routers never share one."""

    __slots__ = (
        "block",
        "cdf_rows",
        "dec",
        "decode_features",
        "e2e_mean",
        "e2e_var",
        "kv1",
        "logs",
        "m2",
        "means",
        "mix",
        "variances",
        "z",
        "z_e2e",
        "z_ttft",
    )

    def __init__(self, r: int) -> None:
        self.mix = _MIX_TEMPLATE.copy()  # _predict_block overwrites only _MIX_SLOTS
        self.block = b = np.empty((_MIX_TEMPLATE.shape[0], r))
        self.means = b[_TTFT_MEAN : _E2E_MEAN + 1]
        self.kv1 = b[_KV1]
        self.logs = b[0 : _KV1 + 1]
        self.decode_features = b[_SIGMA_P2 : _DEC_OFFSET + 1]
        self.e2e_var = b[_E2E_VAR]
        self.variances = b[_TTFT_VAR : _E2E_VAR + 1]
        self.cdf_rows = b[0 : _LOG_SLO_E2E + 1]
        self.e2e_mean = b[_E2E_MEAN_KEPT]
        self.m2 = np.empty((2, r))
        self.dec = np.empty(r)
        self.z = np.empty((2, r))
        self.z_ttft, self.z_e2e = self.z[0], self.z[1]


_LOCAL = threading.local()
_MAX_WORKSPACES = 16  # per thread: a router sees few distinct replica counts


def _workspace(r: int) -> _Workspace:
    spaces: dict[int, _Workspace] = _LOCAL.__dict__  # type: ignore[assignment]
    ws = spaces.get(r)
    if ws is None:
        if len(spaces) >= _MAX_WORKSPACES:
            spaces.clear()
        ws = spaces[r] = _Workspace(r)
    return ws


class _LoadTerms:
    """Request-independent terms of ``predict_latency`` for one ``ReplicaLoad``
    (independent of the queue wait too: ``ReplicaLoad.with_queue_wait`` and
    ``with_added_queue`` share them); ``base_basis`` is rows 0..8 of the
    prediction's basis (see _predict_block)."""

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
        basis = np.empty((9, n))  # rows 0..8 of the basis listed above _TTFT_MEAN
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
        (a, 2b, 1) of block rows _SIGMA_P2.._DEC_OFFSET (see _slo_probability), the
        per-replica offset ``off`` of log σ_ITL², and rows 0..8 of the basis with
        off + log AR in its row 8."""
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
