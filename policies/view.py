"""``ReplicaView``: the candidate replicas as a struct of arrays, built from snapshots.

Every policy reads replicas through a ``ReplicaView``: one numpy array per
quantity, one entry per replica, so scoring 64 or 1,024 replicas is a handful of
vectorized operations instead of a Python loop. ``build_view`` turns the latest
``ReplicaSnapshot`` of each replica plus this router's in-flight counts into a
view and derives the ``uncertainty.ReplicaLoad`` the cascade prediction needs.

Missing telemetry (a fresh replica has no history) is filled from
``ReplicaPrior`` defaults, documented field by field below. A ``DecayedStats``
read-out with fewer than ``min_n_eff`` effective samples counts as missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from replicas.telemetry import (
    GENERATED_EDGES,
    ITL,
    PREFILL_STEP,
    QUEUE_WAIT,
    STEP,
    DecayedStats,
    ReplicaSnapshot,
)
from uncertainty import ReplicaLoad
from uncertainty.validation import FloatArray

IntArray = NDArray[np.intp]


@dataclass(frozen=True)
class ReplicaPrior:
    """Defaults for a replica whose telemetry lacks a metric (units: s, tokens).

    The values describe a typical mid-size model on one GPU; they only matter
    until the replica has served a few requests. A fresh replica also has an
    empty queue, so routers prefer it, which is what a scale-up wants.
    """

    prefill_s_per_token: float = 2e-4  # ~5k prompt tokens/s
    prefill_cv: float = 0.2  # CV of prefill time
    itl_mean_s: float = 0.03  # decode inter-token latency
    itl_autocorr: float = 0.5  # consecutive ITLs share batches
    sigma_prefill_s: float = 0.005  # σ of prefill step times (> 0, the cascade input)
    unseen_prompt_tokens: float = 512.0  # assumed prompt of a routed request not yet in a snapshot
    min_n_eff: float = 2.0  # fewer effective samples than this = metric missing

    def __post_init__(self) -> None:
        for name in (
            "prefill_s_per_token",
            "itl_mean_s",
            "sigma_prefill_s",
            "unseen_prompt_tokens",
            "min_n_eff",
        ):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"ReplicaPrior.{name}={v!r}: must be finite and > 0")
        if not (math.isfinite(self.prefill_cv) and self.prefill_cv >= 0):
            raise ValueError(f"ReplicaPrior.prefill_cv={self.prefill_cv!r}: must be >= 0")
        if not -1.0 < self.itl_autocorr < 1.0:
            raise ValueError(f"ReplicaPrior.itl_autocorr={self.itl_autocorr!r}: must be in (-1, 1)")


DEFAULT_PRIOR = ReplicaPrior()


def _ro(a: FloatArray) -> FloatArray:
    arr = np.asarray(a, dtype=np.float64)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class ReplicaView:
    """R candidate replicas, struct of arrays (each array has shape (R,), read-only).

    Counts are stored as float64 so scorers can do arithmetic without casts.
    ``outstanding`` is this router's in-flight count per replica (routed, not
    completed); ``load`` is the ``uncertainty.ReplicaLoad`` for
    ``predict_latency``, with the requests this router sent that the snapshot
    cannot have seen yet (``unseen``) already counted in its queue wait;
    ``base_load`` is the same without them and ``unseen_cost_s`` the queue work
    one unseen request adds (s), so ``with_outstanding`` is cheap.
    """

    replica_ids: tuple[str, ...]
    pools: tuple[str, ...]
    accelerators: tuple[str, ...]
    time_s: float  # the ``now_s`` the view was built at (injected clock)
    age_s: FloatArray  # now_s − snapshot time, >= 0
    running: FloatArray
    waiting: FloatArray
    waiting_prefill_tokens: FloatArray
    outstanding: FloatArray
    unseen: FloatArray  # max(0, outstanding − running − waiting): sent but not in the snapshot
    kv_usage: FloatArray  # fraction of KV blocks in use, [0, 1]
    kv_blocks_used: FloatArray
    kv_blocks_total: FloatArray
    block_size: FloatArray  # tokens per KV block
    prefix_hit_rate: FloatArray
    cached_prefixes: tuple[frozenset[int], ...]  # block hashes each replica reports cached
    # (R, len(GENERATED_EDGES)): ongoing requests by output tokens generated so
    # far (snapshot.generated_hist; a row of zeros where a replica reports none)
    generated_hist: FloatArray
    load: ReplicaLoad
    base_load: ReplicaLoad
    unseen_cost_s: FloatArray

    def __post_init__(self) -> None:
        n = len(self.replica_ids)
        for name in ("pools", "accelerators", "cached_prefixes"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ReplicaView.{name}: length differs from replica_ids ({n})")
        for name in ("load", "base_load"):
            size = getattr(self, name).size
            if size != n:
                raise ValueError(f"ReplicaView.{name}: size {size} != {n} replicas")
        if len(set(self.replica_ids)) != n:
            raise ValueError("ReplicaView: duplicate replica ids")

    @property
    def size(self) -> int:
        return len(self.replica_ids)

    def __len__(self) -> int:
        return len(self.replica_ids)

    @cached_property
    def indices(self) -> IntArray:
        """``arange(size)``, read-only, made once per view (``with_outstanding``
        keeps it): a router's candidate set when no filter drops anything."""
        out: IntArray = np.arange(len(self.replica_ids))
        out.setflags(write=False)
        return out

    @cached_property
    def _index(self) -> dict[str, int]:
        return {rid: i for i, rid in enumerate(self.replica_ids)}

    def index_of(self, replica_id: str) -> int:
        """Position of ``replica_id``; ``KeyError`` if it is not in the view."""
        return self._index[replica_id]

    def find(self, replica_id: str) -> int | None:
        """Position of ``replica_id``, or None if it is not in the view."""
        return self._index.get(replica_id)

    @cached_property
    def ongoing(self) -> FloatArray:
        """Requests on each replica as this router best knows it:
        max(snapshot running + waiting, router-local in flight). The snapshot is
        up to a period stale and the local count misses other routers, so each
        is a lower bound of the truth and the max is the tighter one."""
        return _ro(np.maximum(self.running + self.waiting, self.outstanding))

    def pool_indices(self, pool: str) -> IntArray:
        """Indices of the replicas in ``pool`` (possibly empty)."""
        return np.flatnonzero(np.asarray(self.pools) == pool) if self.size else np.empty(0, np.intp)

    def take(self, indices: IntArray | Sequence[int]) -> ReplicaView:
        """The sub-view of ``indices`` (in that order), e.g. one pool's replicas."""
        idx = np.asarray(indices, dtype=np.intp)
        arrays: dict[str, Any] = {
            f.name: _ro(getattr(self, f.name)[idx])
            for f in fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        }
        tuples: dict[str, Any] = {
            name: tuple(getattr(self, name)[i] for i in idx)
            for name in ("replica_ids", "pools", "accelerators", "cached_prefixes")
        }
        return replace(
            self,
            **arrays,
            **tuples,
            load=_take_load(self.load, idx),
            base_load=_take_load(self.base_load, idx),
        )

    @cached_property
    def _queued(self) -> FloatArray:
        """running + waiting per replica (what the snapshot already counts)."""
        return _ro(self.running + self.waiting)

    def with_outstanding(self, outstanding: Mapping[str, int] | None) -> ReplicaView:
        """The same snapshots with new router-local in-flight counts (cheap: no
        snapshot is re-read; the queue-wait arrays are recomputed)."""
        self.indices  # noqa: B018  (cache it on this view, so that every copy shares it)
        out = _outstanding_array(self.replica_ids, outstanding, self._index)
        unseen = np.subtract(out, self._queued)
        np.maximum(unseen, 0.0, out=unseen)
        load = _load_with_unseen(self.base_load, unseen, self.unseen_cost_s)
        # Per-request hot path: everything but three arrays is shared and was
        # validated when this view was built, so skip the constructor's checks.
        new = object.__new__(ReplicaView)
        new.__dict__.update(self.__dict__)
        new.__dict__.pop("ongoing", None)  # cached from the old in-flight counts
        new.__dict__.update(outstanding=_ro(out), unseen=_ro(unseen), load=load)
        return new


def _take_load(load: ReplicaLoad, idx: IntArray) -> ReplicaLoad:
    return ReplicaLoad(**{f.name: getattr(load, f.name)[idx] for f in fields(load)})


def _outstanding_array(
    ids: Sequence[str],
    outstanding: Mapping[str, int] | None,
    index: Mapping[str, int] | None = None,
) -> FloatArray:
    """In-flight count per id (0 for ids not in ``outstanding``; ids of
    ``outstanding`` that are not in ``ids`` are ignored). ``index`` (id →
    position) lets a few counts be placed one by one instead of looking up
    every id: a router has requests in flight on a few replicas of many."""
    n = len(ids)
    if not outstanding:
        return np.zeros(n)
    if index is not None and 4 * len(outstanding) <= n:
        out = np.zeros(n)
        for rid, count in outstanding.items():
            i = index.get(rid)
            if i is not None:
                if count < 0:
                    raise ValueError(f"outstanding[{rid!r}] = {count:g}: must be >= 0")
                out[i] = count
        return out
    out = np.fromiter((outstanding.get(r, 0) for r in ids), dtype=np.float64, count=n)
    if (out < 0).any():
        i = int(np.argmin(out))
        raise ValueError(f"outstanding[{ids[i]!r}] = {out[i]:g}: must be >= 0")
    return out


def _stat(recent: Mapping[str, DecayedStats], name: str, min_n_eff: float) -> DecayedStats | None:
    st = recent.get(name)
    return st if st is not None and st.n_eff >= min_n_eff and st.mean > 0 else None


def _load_with_unseen(base: ReplicaLoad, unseen: FloatArray, cost_s: FloatArray) -> ReplicaLoad:
    """Add the queue work of ``unseen`` requests (sent but not yet in the
    snapshot; ``cost_s`` seconds each, σ = prefill CV × work) to the queue wait.
    Without it every decision between two snapshots sees the same state and all
    of them pile onto the same "best" replica."""
    if not unseen.any():
        return base
    # extra mean and σ, finite and >= 0 by construction (unseen >= 0 and the
    # costs and CVs were validated when the view was built)
    extra = np.empty((2, unseen.size))
    np.multiply(unseen, cost_s, out=extra[0])
    np.multiply(extra[0], base.prefill_cv, out=extra[1])
    return base.with_added_queue_unchecked(extra)


def build_view(
    snapshots: Sequence[ReplicaSnapshot],
    outstanding: Mapping[str, int] | None = None,
    now_s: float = 0.0,
    *,
    priors: Mapping[str, ReplicaPrior] | None = None,
) -> ReplicaView:
    """Build the view of ``snapshots`` (one per replica, order kept) at ``now_s``.

    ``outstanding`` maps replica id → this router's in-flight requests (missing
    ids count 0). ``priors`` maps an accelerator name (``snapshot.accelerator``)
    to the defaults for missing metrics; ``"default"`` or ``ReplicaPrior()``
    covers the rest.

    Derivation of the ``ReplicaLoad`` per replica (c = prefill s/token, the
    snapshot's or the prior's):

    - queue wait mean = max(c · waiting prefill tokens, recent queue-wait mean if
      requests are waiting) + ITL/2 (the step already running), plus
      c · ``unseen_prompt_tokens`` per request sent but not yet in the snapshot;
      σ = √((CV_prefill · work)² + queue-wait σ² + ITL²/12).
    - prefill CV = σ/mean of ``recent["prefill_step"]``; ``sigma_prefill`` = its σ.
    - ITL mean / σ / lag-1 autocorrelation from ``recent["itl"]`` (mean falls back
      to ``recent["step"]``, then the prior; σ = 0 means "unknown, use the cascade
      model").
    - KV pressure = used / total blocks; capacity = total blocks × block size;
      heterogeneity = ``batch.heterogeneity`` (>= 1).

    Raises ``ValueError`` on duplicate replica ids or a negative in-flight count.
    """
    n = len(snapshots)
    ids = tuple(s.replica_id for s in snapshots)
    if len(set(ids)) != n:
        raise ValueError("build_view: duplicate replica ids in snapshots")
    out = _outstanding_array(ids, outstanding)

    cols = np.zeros((14, n))
    (
        running,
        waiting,
        wptok,
        kv_used,
        kv_total,
        block,
        hit,
        age,
        c_pref,
        cv_pref,
        sd_pref,
        itl_m,
        itl_sd,
        itl_rho,
    ) = cols
    qw_mean = np.zeros(n)
    qw_sd = np.zeros(n)
    het = np.ones(n)
    gen_hist = np.zeros((n, len(GENERATED_EDGES)))
    prior_rows: list[ReplicaPrior] = []
    for i, s in enumerate(snapshots):
        p = DEFAULT_PRIOR
        if priors:
            p = priors.get(s.accelerator) or priors.get("default") or DEFAULT_PRIOR
        prior_rows.append(p)
        running[i] = s.running
        waiting[i] = s.waiting
        wptok[i] = s.waiting_prefill_tokens
        kv_used[i] = s.kv_blocks_used
        kv_total[i] = s.kv_blocks_total
        block[i] = s.block_size
        hit[i] = s.prefix_hit_rate
        age[i] = max(0.0, now_s - s.time_s)
        het[i] = max(1.0, s.batch.heterogeneity)
        if s.generated_hist:
            gen_hist[i] = s.generated_hist
        c_pref[i] = s.prefill_s_per_token if s.prefill_s_per_token > 0 else p.prefill_s_per_token
        pst = _stat(s.recent, PREFILL_STEP, p.min_n_eff)
        if pst is not None and pst.std > 0:
            cv_pref[i] = min(pst.std / pst.mean, 5.0)
            sd_pref[i] = pst.std
        else:
            cv_pref[i] = p.prefill_cv
            sd_pref[i] = p.sigma_prefill_s
        itl = _stat(s.recent, ITL, p.min_n_eff)
        if itl is not None:
            itl_m[i], itl_sd[i], itl_rho[i] = itl.mean, itl.std, itl.autocorr
        else:
            step = _stat(s.recent, STEP, p.min_n_eff)
            itl_m[i] = step.mean if step is not None else p.itl_mean_s
            itl_rho[i] = p.itl_autocorr
        if s.waiting > 0:
            qw = _stat(s.recent, QUEUE_WAIT, p.min_n_eff)
            if qw is not None:
                qw_mean[i], qw_sd[i] = qw.mean, qw.std

    work = wptok * c_pref
    base = ReplicaLoad(
        queue_wait_mean_s=np.maximum(work, qw_mean) + 0.5 * itl_m,
        queue_wait_std_s=np.sqrt((cv_pref * work) ** 2 + qw_sd**2 + itl_m**2 / 12.0),
        prefill_s_per_token=c_pref,
        prefill_cv=cv_pref,
        itl_mean_s=itl_m,
        itl_std_s=itl_sd,
        itl_autocorr=np.clip(itl_rho, -0.95, 0.95),
        sigma_prefill_s=np.maximum(sd_pref, 1e-9),
        kv_pressure=np.clip(kv_used / kv_total, 0.0, 1.0),
        kv_capacity_tokens=kv_total * block,
        heterogeneity=het,
    )
    unseen = np.maximum(out - running - waiting, 0.0)
    unseen_cost = c_pref * np.fromiter(
        (p.unseen_prompt_tokens for p in prior_rows), dtype=np.float64, count=n
    )
    load = _load_with_unseen(base, unseen, unseen_cost)
    return ReplicaView(
        replica_ids=ids,
        pools=tuple(s.pool for s in snapshots),
        accelerators=tuple(s.accelerator for s in snapshots),
        time_s=float(now_s),
        age_s=_ro(age),
        running=_ro(running),
        waiting=_ro(waiting),
        waiting_prefill_tokens=_ro(wptok),
        outstanding=_ro(out),
        unseen=_ro(unseen),
        kv_usage=_ro(kv_used / kv_total),
        kv_blocks_used=_ro(kv_used),
        kv_blocks_total=_ro(kv_total),
        block_size=_ro(block),
        prefix_hit_rate=_ro(hit),
        cached_prefixes=tuple(s.cached_prefix_hashes for s in snapshots),
        generated_hist=_ro(gen_hist),
        load=load,
        base_load=base,
        unseen_cost_s=_ro(unseen_cost),
    )
