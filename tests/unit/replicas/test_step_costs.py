"""Costs outside the step profile: a fixed per-step overhead and the stretch of
engines sharing cores (``replicas.step_time``, ``replicas.core_sharing``)."""

from __future__ import annotations

import numpy as np
import pytest

from replicas.core_sharing import CoreGroups, CoreSharing
from replicas.engine_model import EngineConfig, EngineModel
from replicas.perf_model import FittedPerfModel, ProfiledPerfModel
from replicas.step_time import StepTimeSampler
from replicas.telemetry import RequestInfo

FITTED = FittedPerfModel((2e-3, 1e-5, 1e-9, 2e-5, 1e-8), cv=0.1)


# ---- the sampler -------------------------------------------------------------------
def test_a_step_is_the_draw_plus_the_overhead_times_the_scale() -> None:
    plain = StepTimeSampler(FITTED, np.random.default_rng(4))
    costly = StepTimeSampler(FITTED, np.random.default_rng(4), overhead_s=0.007)
    costly.scale = 1.5
    shapes = [(512, 1, 512, 512 * 512 / 2, 0, 0), (40, 0, 0, 0.0, 40, 30_000)] * 3
    for shape in shapes:
        assert costly.step(*shape) == pytest.approx((plain.step(*shape) + 0.007) * 1.5, rel=1e-12)


def test_a_costly_decode_run_equals_its_steps_and_draws_the_same_noise() -> None:
    run, by_step = (
        StepTimeSampler(FITTED, np.random.default_rng(9), overhead_s=0.004) for _ in range(2)
    )
    run.scale = by_step.scale = 1.25
    ends: list[float] = []
    run.decode_run(24, 10_000, 50, 3.0, float("inf"), ends)
    t, want = 3.0, []
    for j in range(50):
        t += by_step.step(24, 0, 0, 0.0, 24, 10_000 + j * 24)
        want.append(t)
    np.testing.assert_allclose(ends, want, rtol=1e-12)
    # the overhead consumed no draws: the engine-alone stream continues in step
    alone = StepTimeSampler(FITTED, np.random.default_rng(9))
    alone.decode_run(24, 10_000, 50, 3.0, float("inf"), [])
    assert run.step(1, 0, 0, 0.0, 1, 5) == pytest.approx(
        (alone.step(1, 0, 0, 0.0, 1, 5) + 0.004) * 1.25, rel=1e-12
    )


def test_engine_config_refuses_a_negative_step_overhead() -> None:
    for bad in (-1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="step_overhead_s"):
            EngineConfig(num_blocks=10, step_overhead_s=bad)


# ---- one engine at concurrency 1 ---------------------------------------------------
def _alone(overhead: float, *, fast: bool) -> tuple[float, float, int]:
    """(TTFT, TPOT, steps) of one 300-token prompt with 64 output tokens, alone."""
    cfg = EngineConfig(num_blocks=2000, max_num_batched_tokens=128, step_overhead_s=overhead)
    pm = ProfiledPerfModel.load("llama-2-7b", "a100", 1)
    eng = EngineModel("r", "p", pm, cfg, np.random.default_rng(5), fast_forward=fast)
    req = eng.add_request(RequestInfo("q", 300, 64), 0.0)
    assert req is not None
    t = 0.0
    while eng.has_work:
        d = eng.begin_step(t)
        assert d is not None
        t += d
        eng.end_step(t)
    return req.first_token_s, (req.finish_s - req.first_token_s) / 63, eng.steps


@pytest.mark.parametrize("fast", [False, True])
def test_a_step_overhead_of_x_adds_x_to_tpot_and_to_each_prefill_step(fast: bool) -> None:
    ttft0, tpot0, steps = _alone(0.0, fast=fast)
    ttft1, tpot1, steps1 = _alone(0.006, fast=fast)
    assert steps1 == steps == 3 + 63  # 300 prompt tokens in 128-token chunks, 63 decodes
    # same noise draws, so the difference is the overhead exactly (float rounding only)
    assert tpot1 - tpot0 == pytest.approx(0.006, abs=1e-12)
    assert ttft1 - ttft0 == pytest.approx(3 * 0.006, abs=1e-12)


# ---- core groups -------------------------------------------------------------------
def test_core_sharing_validates_and_states_whether_it_can_stretch() -> None:
    with pytest.raises(ValueError, match="engines_per_group"):
        CoreSharing(0, 0.5)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            CoreSharing(2, bad)
    assert CoreSharing(2, 0.3).active
    assert not CoreSharing(1, 0.3).active and not CoreSharing(4, 0.0).active
    assert CoreSharing(3, 0.25).stretch(2) == pytest.approx(1.5)
    for bad in (-0.01, float("nan")):
        with pytest.raises(ValueError, match="per_stream"):
            CoreSharing(2, 0.0, bad)
    # the serving stack's streams stretch every engine's steps, shared or not
    assert CoreSharing(1, 0.0, 0.02).active
    assert CoreSharing(3, 0.25, 0.02).stretch(2, streams=10) == pytest.approx(1.7)


def test_groups_add_the_host_wide_streams_to_every_engine() -> None:
    g = CoreGroups(CoreSharing(2, 0.5, per_stream=0.01), 3)
    g.set_busy(0, True)
    g.set_busy(1, True)
    g.streams = 20
    assert g.busy() == [0, 1]
    assert g.stretch(0) == pytest.approx(1.0 + 0.5 + 0.2)
    assert g.stretch(2) == pytest.approx(1.0 + 0.2)  # alone in its group: streams only


def test_groups_count_only_busy_peers_of_the_same_group() -> None:
    g = CoreGroups(CoreSharing(2, 0.5), 5)  # groups {0, 1}, {2, 3}, {4}
    assert g.stretch(0) == 1.0
    assert g.set_busy(0, True) == []  # no busy peer to cut
    assert g.set_busy(0, True) == []  # no change
    assert g.stretch(0) == 1.0 and g.stretch(1) == 1.5  # a busy engine does not slow itself
    assert g.set_busy(1, True) == [0]  # engine 0's next steps are now slower
    assert g.stretch(0) == g.stretch(1) == 1.5
    assert g.set_busy(2, True) == [] and g.stretch(2) == 1.0  # another group
    assert g.set_busy(4, True) == [] and g.stretch(4) == 1.0  # a group of one
    assert g.set_busy(1, False) == [0] and g.stretch(0) == 1.0
