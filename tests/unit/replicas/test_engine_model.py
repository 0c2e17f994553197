"""Engine-model invariants: KV never over-allocated, budgets respected, every
admitted request finishes, preemptions counted, deterministic per seed."""

from __future__ import annotations

import numpy as np
import pytest

from replicas.engine_model import EngineConfig, EngineModel
from replicas.perf_model import ProfiledPerfModel
from replicas.telemetry import E2E, ITL, TTFT, RequestInfo


def _run(
    seed: int, *, num_blocks: int = 600, n: int = 300, budget: int = 1024, max_seqs: int = 32,
    prefix: bool = True,
    fast: bool = False,
) -> tuple[EngineModel, list[tuple[str, float, int]]]:  # fmt: skip
    pm = ProfiledPerfModel.load("llama-2-7b", "a100", 1)
    cfg = EngineConfig(
        num_blocks=num_blocks, max_num_batched_tokens=budget, max_num_seqs=max_seqs,
        prefix_unit_tokens=64,
    )  # fmt: skip
    eng = EngineModel("r0", "pool", pm, cfg, np.random.default_rng(seed), fast_forward=fast)
    rng = np.random.default_rng(seed + 1)
    arrivals = np.cumsum(rng.exponential(0.05, n))
    t, i, done = 0.0, 0, []
    admitted = 0
    while i < n or eng.has_work:
        if not eng.has_work:
            t = max(t, float(arrivals[i]))
        while i < n and arrivals[i] <= t:
            hashes = tuple(int(h) for h in rng.integers(0, 8, 4)) if prefix else ()
            info = RequestInfo(f"q{i}", int(rng.integers(1, 900)), 4096, prefix_hashes=hashes)
            if eng.add_request(info, t, output_tokens=int(rng.integers(1, 200)), idx=i):
                admitted += 1
            i += 1
        d = eng.begin_step(t)
        assert d is not None and d > 0
        assert eng.last_step_tokens <= budget
        assert eng.last_step_seqs <= max_seqs
        assert 0 <= eng.kv_blocks_used <= num_blocks
        t += d
        for r in eng.end_step(t):
            assert r.generated == r.output
            assert r.arrival_s <= r.first_sched_s <= r.first_token_s <= r.finish_s
            done.append((r.request_id, r.finish_s, r.preemptions))
        assert 0 <= eng.kv_blocks_used <= num_blocks
    assert len(done) == admitted == eng.completed
    assert eng.kv_blocks_used == 0 or eng.config.enable_prefix_caching
    return eng, done


def test_every_admitted_request_finishes_within_budgets() -> None:
    eng, done = _run(0)
    assert len(done) == 300 and eng.rejected == 0


def test_kv_pressure_causes_counted_preemptions() -> None:
    eng, done = _run(1, num_blocks=120, budget=2048, max_seqs=64, prefix=False)
    assert eng.preemptions > 0
    assert sum(p for _, _, p in done) == eng.preemptions
    assert eng.kv_blocks_used == 0  # everything freed at the end


def test_requests_that_can_never_fit_are_rejected() -> None:
    pm = ProfiledPerfModel.load("llama-2-7b", "a100", 1)
    eng = EngineModel("r", "p", pm, EngineConfig(num_blocks=10), np.random.default_rng(0))
    assert eng.add_request(RequestInfo("big", 500, 10), 0.0) is None
    assert eng.rejected == 1 and not eng.has_work


def test_prefix_cache_hits_are_reported() -> None:
    eng, _ = _run(2)
    snap = eng.snapshot(1e4)
    assert 0.0 < snap.prefix_hit_rate < 1.0
    assert snap.cached_prefix_hashes  # cached units stay advertised once idle


def test_deterministic_per_seed() -> None:
    _, a = _run(3)
    _, b = _run(3)
    _, c = _run(4)
    assert a == b
    assert a != c


def test_snapshot_carries_telemetry() -> None:
    eng, _ = _run(5)
    snap = eng.snapshot(1e4)
    assert snap.completed == 300 and snap.running == 0 and snap.waiting == 0
    for metric in (TTFT, ITL, E2E):
        assert snap.summaries[metric].n > 0
        assert snap.recent[metric].mean > 0
    assert snap.summaries[TTFT].n == 300
    assert snap.prefill_s_per_token > 0


def test_chunked_prefill_splits_long_prompts() -> None:
    pm = ProfiledPerfModel.load("llama-2-7b", "a100", 1)
    cfg = EngineConfig(num_blocks=1000, max_num_batched_tokens=256)
    eng = EngineModel("r", "p", pm, cfg, np.random.default_rng(0))
    eng.add_request(RequestInfo("long", 1000, 3), 0.0)
    t, steps = 0.0, 0
    while eng.has_work:
        d = eng.begin_step(t)
        assert d is not None
        assert eng.last_step_tokens <= 256
        t += d
        eng.end_step(t)
        steps += 1
    assert steps == 4 + 2  # ceil(1000/256) prefill chunks, then 2 decode steps
    assert eng.completed == 1


@pytest.mark.parametrize("during_step", [False, True])
def test_abort_frees_blocks(during_step: bool) -> None:
    pm = ProfiledPerfModel.load("llama-2-7b", "a100", 1)
    eng = EngineModel("r", "p", pm, EngineConfig(num_blocks=100), np.random.default_rng(0))
    eng.add_request(RequestInfo("a", 100, 50), 0.0)
    d = eng.begin_step(0.0)
    assert d is not None
    if during_step:
        assert eng.abort("a")
        eng.end_step(d)
    else:
        eng.end_step(d)
        assert eng.abort("a")
    assert eng.kv_blocks_used == 0 and not eng.has_work


def test_fast_forwarded_decode_runs_keep_invariants_and_results() -> None:
    slow, a = _run(6, prefix=False)
    fast, b = _run(6, prefix=False, fast=True)
    assert fast.steps == slow.steps or abs(fast.steps - slow.steps) / slow.steps < 0.05
    assert len(a) == len(b) == 300
    # different noise draws, the same model: finish times agree closely
    fa = np.array(sorted(t for _, t, _ in a))
    fb = np.array(sorted(t for _, t, _ in b))
    assert abs(fa.mean() - fb.mean()) / fa.mean() < 0.05
