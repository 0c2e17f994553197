"""Wasted-compute counters of the engine model: tokens recomputed after a
preemption, output tokens of aborted requests. The checks are exact token
accounting, not "the counter moved"."""

from __future__ import annotations

import numpy as np

from replicas.engine_model import EngineConfig, EngineModel
from replicas.perf_model import ProfiledPerfModel
from replicas.telemetry import RequestInfo


def _drain(
    num_blocks: int, seed: int, n: int = 120, fast: bool = False
) -> tuple[EngineModel, int, int]:
    """Serve n requests (no prefix caching) to the end; returns the engine, the
    tokens scheduled over all steps, and Σ(prompt + output − 1): the tokens a run
    without preemptions computes."""
    pm = ProfiledPerfModel.load("llama-2-7b", "a100", 1)
    cfg = EngineConfig(
        num_blocks=num_blocks, max_num_batched_tokens=2048, max_num_seqs=64,
        enable_prefix_caching=False,
    )  # fmt: skip
    eng = EngineModel("r", "p", pm, cfg, np.random.default_rng(seed), fast_forward=fast)
    rng = np.random.default_rng(seed + 1)
    ideal = 0
    for i in range(n):
        prompt, out = int(rng.integers(16, 600)), int(rng.integers(1, 200))
        assert eng.add_request(RequestInfo(f"q{i}", prompt, 4096), 0.0, output_tokens=out)
        ideal += prompt + out - 1
    t, scheduled = 0.0, 0
    while eng.has_work:
        d = eng.begin_step(t)
        assert d is not None
        scheduled += eng.last_step_tokens
        t += d
        eng.end_step(t)
    return eng, scheduled, ideal


def test_no_preemption_means_nothing_recomputed() -> None:
    eng, scheduled, ideal = _drain(num_blocks=10_000, seed=0)
    assert eng.preemptions == 0
    assert eng.recomputed_tokens == 0
    assert scheduled == ideal


def test_recomputed_tokens_are_exactly_the_extra_tokens_scheduled() -> None:
    # 120 requests at once into 150 blocks (2,400 tokens): heavy preemption
    eng, scheduled, ideal = _drain(num_blocks=150, seed=1)
    assert eng.preemptions > 10
    assert eng.recomputed_tokens > 0
    # every token scheduled beyond the ideal count is one computed again
    assert scheduled == ideal + eng.recomputed_tokens


def test_fast_forward_keeps_the_recompute_count_consistent() -> None:
    # decode runs never recompute; a fast-forwarded engine obeys the same identity
    # (its last_step_tokens counts one step of a run, so compare with the slow path)
    slow, _, _ = _drain(num_blocks=150, seed=2)
    fast, _, _ = _drain(num_blocks=150, seed=2, fast=True)
    assert slow.recomputed_tokens > 0 and fast.recomputed_tokens > 0
    assert fast.completed == slow.completed == 120


def test_aborted_requests_count_their_generated_tokens() -> None:
    pm = ProfiledPerfModel.load("llama-2-7b", "a100", 1)
    eng = EngineModel("r", "p", pm, EngineConfig(num_blocks=100), np.random.default_rng(0))
    eng.add_request(RequestInfo("a", 100, 50), 0.0)
    eng.add_request(RequestInfo("b", 10, 50), 0.0)
    t = 0.0
    for _ in range(6):  # one prefill step (both), then 5 decode steps
        d = eng.begin_step(t)
        assert d is not None
        t += d
        eng.end_step(t)
    assert eng.abort("a")
    assert eng.aborted_generated_tokens == 6
    assert eng.abort("b")
    assert eng.aborted_generated_tokens == 12
    assert not eng.abort("a")  # unknown now: nothing more counted
    assert eng.aborted_generated_tokens == 12
