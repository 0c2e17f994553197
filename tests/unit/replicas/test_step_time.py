"""Seeded step durations: one step is the perf model's lognormal draw; a
fast-forwarded decode run is the same steps drawn one by one."""

from __future__ import annotations

import numpy as np

from replicas.perf_model import FittedPerfModel, ProfiledPerfModel, lognormal_draw
from replicas.step_time import _Z_BLOCK, StepTimeSampler

FITTED = FittedPerfModel((2e-3, 1e-5, 1e-9, 2e-5, 1e-8), cv=0.1)


def test_a_step_is_the_perf_models_lognormal_draw_of_the_next_normal() -> None:
    sampler = StepTimeSampler(FITTED, np.random.default_rng(4))
    z = np.random.default_rng(4).standard_normal(_Z_BLOCK)
    shapes = [(512, 1, 512, 512 * 512 / 2, 0, 0), (40, 0, 0, 0.0, 40, 30_000)] * 3
    for i, shape in enumerate(shapes):
        mean, var = FITTED.mean_var(*shape)
        assert sampler.step(*shape) == lognormal_draw(mean, var, float(z[i]))


def test_a_decode_run_equals_its_steps_drawn_one_by_one() -> None:
    for perf in (FITTED, ProfiledPerfModel.load("llama-2-7b", "H100")):
        run, by_step = (StepTimeSampler(perf, np.random.default_rng(9)) for _ in range(2))
        n, kv, k, now = 24, 10_000, 50, 3.0
        ends: list[float] = []
        last = run.decode_run(n, kv, k, now, float("inf"), ends)
        t, want = now, []
        for j in range(k):
            t += by_step.step(n, 0, 0, 0.0, n, kv + j * n)
            want.append(t)
        np.testing.assert_allclose(ends, want, rtol=1e-12)
        assert last == ends[-1]
        # both consumed the same draws: the next step is the same
        assert run.step(n, 0, 0, 0.0, n, kv) == by_step.step(n, 0, 0, 0.0, n, kv)


def test_a_run_cut_at_the_horizon_gives_back_what_it_did_not_take() -> None:
    run, by_step = (StepTimeSampler(FITTED, np.random.default_rng(2)) for _ in range(2))
    ends: list[float] = []
    full: list[float] = []
    StepTimeSampler(FITTED, np.random.default_rng(2)).decode_run(8, 0, 40, 0.0, 1e9, full)
    horizon = full[9]  # the run stops at the first end at or after it: 10 steps
    run.decode_run(8, 0, 40, 0.0, horizon, ends)
    assert len(ends) == 10
    run.give_back(3)  # a caller that takes only 7 of them
    for j in range(7):
        by_step.step(8, 0, 0, 0.0, 8, j * 8)
    assert run.step(8, 0, 0, 0.0, 8, 56) == by_step.step(8, 0, 0, 0.0, 8, 56)
