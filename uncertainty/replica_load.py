"""The state of R candidate replicas that a latency prediction reads.

``ReplicaLoad`` is a struct of arrays over replicas (one entry per replica), so
that a router scores 64 replicas with a handful of numpy operations; a router
refreshes its queue wait per request (``with_queue_wait``, ``with_added_queue``)
while everything else is shared. ``_LoadTerms`` holds the request-independent
terms of the prediction, computed once per load and kept on it (the prediction
modules of this package read ``ReplicaLoad._terms`` and ``_queue_moments``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from uncertainty.validation import FloatArray

SIGMA_PREFILL_FLOOR_S = 1e-12  # σ_prefill below it counts as this (its log feeds the basis)
AR_CLIP = 0.95  # |ρ| cap of the ITL autocorrelation: AR factor (1 + ρ)/(1 − ρ) <= 39
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
        # prediction's basis (uncertainty.prediction_fast). Made once per load;
        # cached by hand: functools.cached_property takes a lock on every first
        # access, and a router's per-request load is always a first access
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
        return self.with_added_queue_unchecked(q)

    def with_added_queue_unchecked(self, extra: FloatArray) -> ReplicaLoad:
        """``with_added_queue`` without the checks, for a caller whose extra work
        is finite and >= 0 by construction (the router's per-request view
        refresh, ``policies.view``): ``extra`` is one (2, R) float64 buffer, row 0
        the extra mean (s), row 1 the extra σ (s). It is not validated and it is
        taken over: overwritten with the new queue moments and made read-only,
        so the caller must not use it again. Bad input is not detected (NaN or a
        negative σ gives wrong predictions, not an error).

        Why it exists: it skips the four validation reductions and the σ copy of
        ``with_added_queue`` on every routing decision (part of the view-refresh
        rework that took it from 44 to 26–28 µs at 64 replicas, docs/benchmarks.md,
        "Third rework"); on valid input its result equals ``with_added_queue``'s
        (tests/unit/uncertainty/test_replica_load.py)."""
        base = self._queue_moments
        extra[0] += base[0]
        extra[1] *= extra[1]
        extra[1] += base[1]
        extra.setflags(write=False)
        return self._with_queue(extra[0], np.sqrt(extra[1]), extra)

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


class _LoadTerms:
    """Request-independent terms of the prediction for one ``ReplicaLoad``
    (independent of the queue wait too: ``ReplicaLoad.with_queue_wait`` and
    ``with_added_queue`` share them); ``base_basis`` is rows 0..8 of the
    prediction's basis (the row list is in ``uncertainty.prediction_fast``)."""

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
        sp_from = np.maximum(load.sigma_prefill_s, SIGMA_PREFILL_FLOOR_S)
        sp_from2 = sp_from * sp_from
        self.log_sp2_from = np.log(sp_from2)
        kv_from = np.clip(load.kv_pressure, 0.0, 1.0)
        self.log1p_kv_from = np.log1p(kv_from)
        c = load.prefill_s_per_token
        itl = load.itl_mean_s
        basis = np.empty((9, n))  # rows 0..8 of the basis (prediction_fast)
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
        rho = np.clip(load.itl_autocorr, -AR_CLIP, AR_CLIP)
        self.ar_factor = (1.0 + rho) / (1.0 - rho)
        self._cascade: tuple[bytes, FloatArray, FloatArray, FloatArray] | None = None

    def cascade(self, theta: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """For cascade coefficients θ = (θ0, a, b, θ3), cached per θ: the weights
        (a, 2b, 1) of the prediction block's rows σ_p,to², 1 + kv_to and the
        decode offset (``prediction_fast._slo_probability``), the per-replica
        offset ``off`` of log σ_ITL², and rows 0..8 of the basis with off + log AR
        in its row 8."""
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
