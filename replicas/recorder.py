"""Replica-side telemetry for engines we do not simulate (real vLLM).

The serving path only appends a timestamp to a list per streamed token
(``on_token``); everything else (folding into estimators, building the snapshot)
happens in ``snapshot``, called every ~250 ms off the token path. That is the
overhead budget: ``cascade bench overhead`` measures it on a real vLLM replica.

From the timestamps of each request (injected clock, seconds):
queue wait ≈ arrival → first scheduled is not visible from outside the engine,
so TTFT (arrival → first token), ITL (gaps between streamed tokens), E2E
(arrival → last token) are measured; the prefill cost per prompt token is
estimated from TTFT of requests that arrived to an idle replica. Engine state
(running / waiting / KV blocks / preemptions / prefix hits) is set by the
deployment from the engine's own stats when it exposes them (``set_engine_state``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from replicas.telemetry import (
    E2E,
    ITL,
    METRICS,
    PREFILL_STEP,
    STEP,
    TTFT,
    BatchComposition,
    DecayedStats,
    ReplicaSnapshot,
    generated_histogram,
)
from uncertainty import DecayedWelford, Summary


@dataclass
class _Req:
    arrival_s: float
    prompt_tokens: int
    idle_at_arrival: bool
    streaming: bool = True
    times: list[float] = field(default_factory=list)


@dataclass
class EngineState:
    """Engine counters the deployment reads from the engine (all optional)."""

    running: int = 0
    waiting: int = 0
    waiting_prefill_tokens: int = 0
    kv_blocks_used: int = 0
    kv_blocks_total: int = 1
    prefix_hit_rate: float = 0.0
    preemptions: int = 0


class TelemetryRecorder:
    """Timestamps → decayed estimators + mergeable summaries → ``ReplicaSnapshot``.

    Not thread-safe: call it from the replica's event loop only.
    """

    def __init__(
        self,
        replica_id: str,
        pool: str,
        *,
        accelerator: str = "unknown",
        block_size: int = 16,
        halflife_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replica_id = replica_id
        self.pool = pool
        self.accelerator = accelerator
        self.block_size = block_size
        self._clock = clock
        self._live: dict[str, _Req] = {}
        self._done: list[_Req] = []
        self._summaries = {m: Summary() for m in METRICS}
        self._recent = {m: DecayedWelford(halflife_s=halflife_s) for m in METRICS}
        self._prefill_per_token = DecayedWelford(halflife_s=halflife_s)
        self.engine_state = EngineState()
        self.completed = 0
        self.rejected_samples = 0

    def now(self) -> float:
        """The injected clock (seconds). On Ray it is wall-clock time, so that the
        controller can compare snapshot times across processes."""
        return self._clock()

    # ---- the token path: O(1) appends only -----------------------------------------
    def on_arrival(self, request_id: str, prompt_tokens: int, *, streaming: bool = True) -> None:
        """A request reached the engine. A non-streaming request yields one
        response at the end: only its E2E is measured (no TTFT/ITL)."""
        self._live[request_id] = _Req(self.now(), max(prompt_tokens, 0), not self._live, streaming)

    def on_token(self, request_id: str) -> None:
        req = self._live.get(request_id)
        if req is not None:
            req.times.append(self.now())

    def on_finish(self, request_id: str) -> None:
        req = self._live.pop(request_id, None)
        if req is not None and req.times:
            self._done.append(req)

    @property
    def outstanding(self) -> int:
        return len(self._live)

    def set_engine_state(self, state: EngineState) -> None:
        self.engine_state = state

    # ---- off the token path ---------------------------------------------------------
    def _fold(self, now: float) -> None:
        done, self._done = self._done, []
        if not done:
            return
        streamed = [r for r in done if r.streaming]
        e2e = np.array([r.times[-1] - r.arrival_s for r in done])
        samples: dict[str, np.ndarray] = {E2E: e2e}
        if streamed:
            samples[TTFT] = np.array([r.times[0] - r.arrival_s for r in streamed])
        gaps = [np.diff(r.times) for r in streamed if len(r.times) > 1]
        if gaps:
            samples[ITL] = np.concatenate(gaps)
            samples[STEP] = samples[ITL]  # a streamed decode token is one engine step
        idle = [r for r in streamed if r.idle_at_arrival and r.prompt_tokens > 0]
        if idle:
            pre = np.array([r.times[0] - r.arrival_s for r in idle])
            samples[PREFILL_STEP] = pre
            self._prefill_per_token.update(
                pre / np.array([r.prompt_tokens for r in idle]), np.full(len(idle), now)
            )
        for metric, x in samples.items():
            x = np.maximum(x, 0.0)  # clock granularity can give -0.0
            if not np.isfinite(x).all():
                self.rejected_samples += int((~np.isfinite(x)).sum())
                x = x[np.isfinite(x)]
            if x.size == 0:
                continue
            self._summaries[metric].update(x)
            self._recent[metric].update(x, np.full(x.size, now))
        self.completed += len(done)

    def snapshot(self) -> ReplicaSnapshot:
        now = self.now()
        self._fold(now)
        st = self.engine_state
        recent = {
            m: DecayedStats(est.mean, est.std, est.n_eff, est.autocorr)
            for m, est in self._recent.items()
            if est.count and math.isfinite(est.mean)
        }
        ppt = self._prefill_per_token.mean if self._prefill_per_token.count else 0.0
        return ReplicaSnapshot(
            replica_id=self.replica_id,
            pool=self.pool,
            time_s=max(now, 0.0),
            accelerator=self.accelerator,
            running=max(st.running, 0),
            waiting=max(st.waiting, 0),
            waiting_prefill_tokens=max(st.waiting_prefill_tokens, 0),
            kv_blocks_used=min(max(st.kv_blocks_used, 0), max(st.kv_blocks_total, 1)),
            kv_blocks_total=max(st.kv_blocks_total, 1),
            block_size=self.block_size,
            prefix_hit_rate=min(max(st.prefix_hit_rate, 0.0), 1.0),
            preemptions=max(st.preemptions, 0),
            completed=self.completed,
            prefill_s_per_token=ppt if math.isfinite(ppt) else 0.0,
            batch=BatchComposition(decode_seqs=max(st.running, 0)),
            summaries={m: s.copy() for m, s in self._summaries.items() if s.n},
            recent=recent,
            # tokens streamed so far per live request (a non-streaming one
            # reports none until it ends: it counts as young)
            generated_hist=generated_histogram([len(r.times) for r in self._live.values()]),
        )
