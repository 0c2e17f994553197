"""A vLLM-v1-like replica in virtual time: continuous batching, paged KV, prefix cache.

``EngineModel`` is one replica: intake (``add_request``), the scheduler it
inherits (``replicas.scheduler``: ``begin_step`` / ``end_step``, as vLLM v1's
``core/sched``), and its ``ReplicaSnapshot``. The parts, as in vLLM v1's
``core/sched`` + ``KVCacheManager``: ``replicas.kv_cache`` is the paged KV cache
with prefix caching; ``replicas.step_time`` the seeded step-time draws;
``replicas.engine_telemetry`` the latency samples and their estimators, read out
by ``snapshot``; ``replicas.sim_request`` the per-request state they share.

Time is virtual and passive: the caller asks ``begin_step(now)`` for the next step
(it returns the step's duration, a seeded draw from the ``PerfModel``, or None when
idle) and calls ``end_step(now + duration)``. The DES and the real-time ``SimEngine``
drive the same object.

Invariants (tested): KV blocks in use never exceed ``num_blocks``; a step never
schedules more than ``max_num_batched_tokens`` tokens nor more than ``max_num_seqs``
sequences; every admitted request finishes (preemptions are counted; requests that
can never fit are rejected at ``add_request``).
"""

from __future__ import annotations

import math

import numpy as np

from replicas.engine_config import EngineConfig
from replicas.perf_model import PerfModel
from replicas.scheduler import Scheduler
from replicas.sim_request import SimRequest
from replicas.telemetry import (
    BatchComposition,
    ReplicaSnapshot,
    RequestInfo,
    generated_histogram,
)

__all__ = ["EngineConfig", "EngineModel", "SimRequest"]  # EngineConfig, SimRequest: re-exported


class EngineModel(Scheduler):
    """One replica's scheduler + KV cache + step-time model (see module docstring).

    Args:
        replica_id, pool, accelerator: identity, copied into snapshots.
        perf, config, rng, collect_tokens, fast_forward: see ``Scheduler``.
    """

    def __init__(
        self,
        replica_id: str,
        pool: str,
        perf: PerfModel,
        config: EngineConfig,
        rng: np.random.Generator,
        *,
        accelerator: str = "unknown",
        collect_tokens: bool = False,
        fast_forward: bool = False,
    ) -> None:
        super().__init__(
            perf, config, rng, collect_tokens=collect_tokens, fast_forward=fast_forward
        )
        self.replica_id = replica_id
        self.pool = pool
        self.accelerator = accelerator

    # ---- intake ------------------------------------------------------------------
    def add_request(
        self, info: RequestInfo, now_s: float, *, output_tokens: int | None = None, idx: int = -1
    ) -> SimRequest | None:
        """Queue a request; returns its state, or None when it can never run here
        (its KV exceeds the whole cache or ``max_model_len``), counted in ``rejected``.
        ``output_tokens``: the true output length (default ``info.max_tokens``)."""
        out = (
            info.max_tokens
            if output_tokens is None
            else max(1, min(output_tokens, info.max_tokens))
        )
        total = info.prompt_tokens + out
        cfg = self.config
        if (
            info.prompt_tokens < 1
            or -(-total // cfg.block_size) > cfg.num_blocks
            or (cfg.max_model_len is not None and total > cfg.max_model_len)
        ):
            self.rejected += 1
            return None
        hashes = info.prefix_hashes if cfg.enable_prefix_caching else ()
        req = SimRequest(info.request_id, info.prompt_tokens, out, hashes, now_s, idx)
        self.waiting.append(req)
        return req

    # ---- telemetry ---------------------------------------------------------------
    def snapshot(self, now_s: float, *, full: bool = True) -> ReplicaSnapshot:
        """The replica's ``ReplicaSnapshot`` at ``now_s``. ``full=False`` skips the
        mergeable ``summaries`` (the simulator's fast path: routers read ``recent``);
        samples seen then are not in later summaries."""
        tel = self.telemetry
        kv = self.kv
        fold = tel.fold_due(now_s, full)
        key = (
            len(self.running), len(self.waiting), kv.empty, len(kv.evictable),
            self.completed, self.preemptions, self.rejected, self.last_prefill_tokens,
            self.last_decode_seqs,
        )  # fmt: skip
        cached = tel.cached_snapshot
        if not full and not fold and cached is not None and key == tel.cached_key:
            # nothing a snapshot shows has changed (the batch heterogeneity drifts
            # within a decode run and is refreshed with the batch): re-stamp it
            fresh = tel.cached_snapshot = cached.at(max(now_s, 0.0))
            return fresh
        if fold:
            tel.fold(full, now_s)
        waiting_prefill = sum(r.prompt + r.generated - r.computed for r in self.waiting)
        ctx = [r.computed for r in self.running]
        het = 1.0
        if len(ctx) > 1:
            m = sum(ctx) / len(ctx)
            if m > 0:
                het = 1.0 + math.sqrt(sum((c - m) ** 2 for c in ctx) / len(ctx)) / m
        pstp = tel.prefill_s_per_token(self.perf.prefill_s_per_token())
        cfg = self.config
        q = self.prefix_query_tokens
        snap = ReplicaSnapshot(
            replica_id=self.replica_id,
            pool=self.pool,
            time_s=max(now_s, 0.0),
            accelerator=self.accelerator,
            running=len(self.running),
            waiting=len(self.waiting),
            waiting_prefill_tokens=waiting_prefill,
            kv_blocks_used=kv.used,
            kv_blocks_total=cfg.num_blocks,
            block_size=cfg.block_size,
            prefix_hit_rate=self.prefix_hit_tokens / q if q else 0.0,
            preemptions=self.preemptions,
            completed=self.completed,
            prefill_s_per_token=max(pstp, 0.0),
            batch=BatchComposition(self.last_prefill_tokens, self.last_decode_seqs, het),
            summaries=tel.summaries() if full else {},
            recent=tel.recent(),
            cached_prefix_hashes=(
                kv.cached_hashes(cfg.max_advertised_prefixes)
                if cfg.enable_prefix_caching
                else frozenset()
            ),
            # waiting requests have generated 0 (or, preempted, more): both count
            generated_hist=generated_histogram(
                [r.generated for r in self.running] + [r.generated for r in self.waiting]
            ),
        )
        if not full:
            tel.cached_snapshot, tel.cached_key = snap, key
        return snap
