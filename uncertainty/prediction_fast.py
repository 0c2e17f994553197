"""The fast path of the latency prediction: one matrix product and 13 in-place
array operations per request, in a per-thread workspace.

``uncertainty.prediction`` (the API) calls it; ``uncertainty.prediction_reference``
is the same model written as the formulas of the ``prediction`` docstring, one
quantity per line. Read that one first: this module computes exactly those
numbers, rearranged so that a router's per-request cost is a few numpy calls.

Why it is correct: every quantity the prediction needs is affine in the
request's scalars (P, P², P + L, L − 1, σ_L², log(L − 1), the SLOs' logs) over
per-replica terms that do not depend on the request (cached per load, and per
θ of the cascade model). So the whole prediction is one product M·B of a
(10, 11) mixing matrix of the request's scalars with an (11, R) per-replica
basis; the decode variance, a product of powers, is the exp of a dot product of
logs; and the two lognormal CDFs share each of their operations. Means and
variances carry floors (1e-150 s, 1e-24 s²) far below any latency, so nothing
needs clamping.

Equality: ``tests/unit/uncertainty/test_prediction_fast.py`` asserts that this
path equals ``prediction_reference`` to 1e-9 (random loads, the prior and fitted
cascade models, fresh and cached terms, a refreshed queue wait), and that
``predict_slo_probability`` equals ``predict_latency(...).prob_within`` bit for bit
(the same operations in the same order).

Measured gain (``scripts/prediction_gain.py``: the reference and this path
alternate call by call in one process, P(meet SLO) and E2E mean + target of one
request, warm per-load caches; 2026-12-03, 2-core VM at load average 5): p50
61 → 11 µs at 8 replicas, 66 → 16 µs at 64 (median ratio 0.23, 4.3× faster),
162 → 78 µs at 1,024. At 64 replicas the reference would add about 50 µs to a
routing decision that takes 36–38 µs in all, well over the 50 µs bar
(docs/benchmarks.md, "Router (issue 4)").

Threads: each thread predicts in its own workspace (``_workspace``), so
concurrent routers never share buffers; a workspace's block is valid until that
thread's next prediction for the same replica count.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from scipy.special import ndtr

from uncertainty.cascade import CascadeModel
from uncertainty.replica_load import ReplicaLoad
from uncertainty.validation import FloatArray

# (raw prediction block (10, R), cascade weights (a, 2b, 1)): what a
# LatencyPrediction keeps to evaluate its SLO probability by this path
Block = tuple[FloatArray, FloatArray]


# ---- what uncertainty.prediction calls ----------------------------------------------


def latency_moments(
    model: CascadeModel, load: ReplicaLoad, p: float, output_tokens: float, output_tokens_std: float
) -> tuple[tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray], Block]:
    """((TTFT mean, TTFT variance, E2E mean, E2E variance, ITL σ with this
    request admitted), the read-only raw block and cascade weights for
    ``block_slo_probability``) per replica, for a request already validated."""
    ws, w = _predict_block(model, load, p, output_tokens, output_tokens_std)
    raw = ws.block.copy()
    raw.setflags(write=False)
    # the decode term, as _slo_probability computes it (out of place here: the
    # raw block is kept for block_slo_probability): a·log σ_p,to² + 2b·log(1 + kv_to) ...
    logs = np.log(np.stack((raw[_SIGMA_P2], np.minimum(raw[_KV1], _KV1_CAP))))
    cascade_log = np.dot(w[:2], logs)
    # ... + off + log AR + log n for the summed decode variance, and + off alone
    # for the ITL variance with this request admitted
    dec = np.exp(cascade_log + raw[_DEC_OFFSET])
    _, off, _ = load._terms.cascade(model.theta)
    itl_var = np.exp(cascade_log + off)
    moments = (
        raw[_TTFT_MEAN],
        raw[_TTFT_VAR],
        raw[_E2E_MEAN_KEPT],
        raw[_E2E_VAR] + dec,
        np.sqrt(itl_var),
    )
    return moments, (raw, w)


def block_slo_probability(block: Block, ttft_slo_s: float, e2e_slo_s: float) -> FloatArray:
    """P(TTFT ≤ ``ttft_slo_s`` and E2E ≤ ``e2e_slo_s``) per replica (a fresh
    array) from a block of ``latency_moments``; SLOs already checked > 0."""
    raw, w = block
    ws = _workspace(raw.shape[1])
    np.copyto(ws.block, raw)
    ws.block[_LOG_SLO_TTFT] = math.log(ttft_slo_s)
    ws.block[_LOG_SLO_E2E] = math.log(e2e_slo_s)
    return _slo_probability(ws, w)


def slo_probability_and_mean(
    model: CascadeModel,
    load: ReplicaLoad,
    p: float,
    output_tokens: float,
    output_tokens_std: float,
    ttft_slo_s: float,
    e2e_slo_s: float,
    e2e_shift_s: float,
) -> tuple[FloatArray, FloatArray]:
    """(P(meet both SLOs), E2E mean + ``e2e_shift_s``) per replica, two fresh
    arrays, for a request and SLOs already validated: 17 array operations."""
    ws, w = _predict_block(
        model,
        load,
        p,
        output_tokens,
        output_tokens_std,
        math.log(ttft_slo_s),
        math.log(e2e_slo_s),
    )
    prob = _slo_probability(ws, w)
    return prob, np.add(ws.e2e_mean, e2e_shift_s)


# ---- the prediction block -----------------------------------------------------------
#
# Per replica, a basis of 11 rows (B, shape (11, R)): rows 0..8 from the load's _LoadTerms
# (request- and queue-independent, row 8 per θ), rows 9, 10 the load's queue wait:
#   0 ones   1 prefill s/token c   2 ITL mean   3 (CV·c)²   4 ITL²   5 σ_p,from²
#   6 1 + kv_from   7 1/capacity   8 off + log AR (replica_load._LoadTerms.cascade)
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
    w, _, basis = load._terms.cascade(model.theta)
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
