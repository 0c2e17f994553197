"""The per-step prefill budget: learned step model, slack, floor, and in the scheduler."""

from __future__ import annotations

import math

import numpy as np
import pytest

from replicas.engine_model import EngineConfig, EngineModel
from replicas.perf_model import ProfiledPerfModel
from replicas.prefill_budget import PrefillBudget
from replicas.telemetry import RequestInfo


def _trained(seed: int = 0) -> PrefillBudget:
    """Steps of d = 10 ms + 0.1 ms per prefill token, ±5 % noise (seeded)."""
    pb = PrefillBudget(0.1, 2048, min_tokens=64, margin=0.8)
    rng = np.random.default_rng(seed)
    for _ in range(400):
        p = int(rng.choice([0, 0, 128, 512, 1024]))
        pb.observe(p, (0.010 + 1e-4 * p) * rng.uniform(0.95, 1.05))
    return pb


def test_before_a_model_or_without_decodes_the_budget_is_vllms() -> None:
    pb = PrefillBudget(0.1, 2048)
    assert pb.budget(0.05) == 2048  # nothing learned yet
    assert _trained().budget(pb.slack_s([], 1.0)) == 2048  # no decode running


def test_the_step_model_is_learned_within_10_percent() -> None:
    pb = _trained()
    assert pb.base_s == pytest.approx(0.010, rel=0.1)
    assert pb.per_token_s == pytest.approx(1e-4, rel=0.1)


def test_budget_follows_the_tightest_decodes_slack_and_never_starves() -> None:
    pb = _trained()
    now = 10.0
    # a fresh decode (1 token, first at now): allowance 0.8 x 0.1 s -> (0.08 - 0.01) / 1e-4
    fresh = pb.budget(pb.slack_s([(1, now)], now))
    assert fresh == pytest.approx(700, rel=0.12)
    # one with 1 s of slack banked (20 tokens in 1 s at a 0.1 s target): the cap
    assert pb.budget(pb.slack_s([(20, now - 1.0)], now)) == 2048
    # the tightest decode decides
    assert pb.budget(pb.slack_s([(20, now - 1.0), (1, now)], now)) == fresh
    # a decode already behind its SLO gets no more than a fresh one, never less than
    # min_tokens: prefills keep progressing
    behind = pb.budget(pb.slack_s([(5, now - 2.0)], now))
    assert 64 <= behind <= fresh
    assert PrefillBudget(0.01, 2048, min_tokens=64).budget(0.0) == 2048  # no model yet
    tight = _trained()
    tight.tpot_slo_s = 0.005  # below the decode-only step: floor
    assert tight.budget(tight.slack_s([(1, now)], now)) == 64


@pytest.mark.parametrize(
    ("args", "match"),
    [((0.0, 100), "tpot_slo_s"), ((math.nan, 100), "tpot_slo_s"), ((0.1, 0), "min_tokens")],
)
def test_bad_settings_raise(args: tuple[float, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PrefillBudget(*args)


def test_bad_observations_raise_and_change_nothing() -> None:
    pb = _trained()
    before = (pb.base_s, pb.per_token_s)
    for p, d in ((-1, 0.01), (10, math.nan), (10, -0.5)):
        with pytest.raises(ValueError, match="bad step"):
            pb.observe(p, d)
    assert (pb.base_s, pb.per_token_s) == before


def _engine(slo: float | None, seed: int = 0) -> tuple[EngineModel, list[int], int]:
    """A100 Llama-2-7B replica, 40 decodes then long prompts; returns the engine,
    every step's prefill tokens, and the requests finished."""
    pm = ProfiledPerfModel.load("llama-2-7b", "a100", 1)
    cfg = EngineConfig(num_blocks=4000, max_num_batched_tokens=4096, max_num_seqs=64,
                       prefill_tpot_slo_s=slo, prefill_min_tokens=64)  # fmt: skip
    eng = EngineModel("r0", "p", pm, cfg, np.random.default_rng(seed))
    t = 0.0
    for i in range(40):
        eng.add_request(RequestInfo(f"d{i}", 64, 400), t, output_tokens=400)
    prefills: list[int] = []
    done = 0
    for step in range(3000):
        if step == 50:  # decodes running: four 3,000-token prompts arrive
            for k in range(4):
                eng.add_request(RequestInfo(f"p{k}", 3000, 8), t, output_tokens=8)
        d = eng.begin_step(t)
        if d is None:
            break
        prefills.append(eng.last_prefill_tokens)
        t += d
        done += len(eng.end_step(t))
    return eng, prefills, done


def test_in_the_scheduler_chunks_shrink_under_decodes_and_every_request_finishes() -> None:
    _, pf_fixed, done_fixed = _engine(None)
    _, pf_slack, done_slack = _engine(0.05)
    assert done_fixed == done_slack == 44  # nobody starves
    # vLLM's fixed budget takes a 3,000-token prompt in one step next to 40 decodes;
    # the slack budget splits it (the 0.05 s TPOT target leaves room for fewer tokens)
    assert max(pf_fixed[50:]) >= 3000
    assert 64 <= max(pf_slack[60:]) < 3000
