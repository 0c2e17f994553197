"""The Ray tier's simulated replicas take ``model.prefill_budget`` from the config
file by the same path as the DES simulator (config -> options -> EngineConfig).

``SimLLMEngine`` imports Ray, so the unit tier drives what it builds from its
options: ``sim_engine_config`` of ``sim_engine_options`` inside a ``SimEngine``
(the engine ``SimLLMEngine`` runs), in virtual time (an injected clock and sleep).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from experiments.sim_config import setup_from_config
from orchestrator.config import CascadeConfig, parse_config
from orchestrator.sim_engine_options import sim_engine_options
from replicas.engine_model import EngineModel
from replicas.perf_model import build_perf_model
from replicas.sim_engine import SimEngine
from replicas.sim_options import sim_engine_config
from replicas.telemetry import RequestInfo

DECODES = 24
DECODE_OUT = 16
LONG_PROMPT = 12_000
TPOT_SLO_S = 0.05


def _config(budget: str) -> CascadeConfig:
    return parse_config(
        {
            "model": {
                "engine": "sim",
                "max_model_len": 16384,
                "max_num_batched_tokens": 8192,
                "prefill_budget": budget,
            },
            "pools": [{"name": "h100", "accelerator": "H100", "initial_replicas": 1}],
            "slos": {"classes": [{"name": "default", "ttft_s": 2.0, "tpot_s": TPOT_SLO_S}]},
        }
    )


def test_options_carry_the_budget_of_the_config_as_the_simulator_takes_it() -> None:
    for budget, slo in (("fixed", None), ("slo_slack", TPOT_SLO_S)):
        cfg = _config(budget)
        opts = sim_engine_options(cfg, cfg.pools[0], 1.0)
        ours = sim_engine_config(opts)
        des = setup_from_config(cfg).pools[0].engine_config()
        assert ours.prefill_tpot_slo_s == des.prefill_tpot_slo_s == slo
        assert ours.prefill_min_tokens == des.prefill_min_tokens == 64
        # every scheduling setting agrees with the DES engine's (it folds samples
        # every 2 s for speed, a read-out setting only)
        for name in ("num_blocks", "max_num_seqs", "max_num_batched_tokens", "kv_eviction"):
            assert getattr(ours, name) == getattr(des, name), name


@pytest.mark.parametrize(
    ("key", "value"),
    [("prefill_tpot_slo_s", 0.0), ("prefill_tpot_slo_s", "fast"), ("max_num_seqs", "many")],
)
def test_bad_options_raise_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"cascade_sim\.{key}"):
        sim_engine_config({"num_blocks": 1000, key: value})


def _serve(budget: str) -> tuple[list[int], list[float], float | None]:
    """Decodes arrive one after another (each once the one before has its first
    token; DECODE_OUT tokens each), then a LONG_PROMPT-token prompt arrives while
    the last ones run. Returns the prefill tokens of the steps from the long
    prompt's arrival to its first token, the TPOT (s) of the decodes running when
    it arrived, and its TTFT (s; None if it never got a token)."""
    cfg = _config(budget)
    opts = sim_engine_options(cfg, cfg.pools[0], 1.0)
    perf = build_perf_model(opts["perf_model"], opts["accelerator"], opts["tp"], None)
    model = EngineModel("r0", "h100", perf, sim_engine_config(opts), np.random.default_rng(0))
    now = [0.0]
    long_at: list[float] = []
    long_first: list[float] = []
    chunks: list[int] = []

    async def sleep(d: float) -> None:  # virtual time: the step "takes" d
        if long_at and not long_first:
            chunks.append(model.last_prefill_tokens)
        now[0] += d
        await asyncio.sleep(0)

    async def main() -> list[tuple[float, float, float]]:
        sim = SimEngine(model, clock=lambda: now[0], sleep=sleep)
        started = [asyncio.Event() for _ in range(DECODES)]

        async def decode(i: int) -> tuple[float, float, float]:
            if i:
                await started[i - 1].wait()
            ts = []
            info = RequestInfo(f"d{i}", 100 + 37 * i, DECODE_OUT)
            async for tok in sim.generate(info, output_tokens=DECODE_OUT):
                ts.append(tok.t_s)
                started[i].set()
            return ts[0], ts[-1], (ts[-1] - ts[0]) / (len(ts) - 1)

        async def long() -> None:
            await started[-1].wait()
            long_at.append(now[0])
            async for tok in sim.generate(RequestInfo("long", LONG_PROMPT, 4), output_tokens=4):
                if not long_first:
                    long_first.append(tok.t_s)

        decodes = asyncio.gather(*(decode(i) for i in range(DECODES)))
        out, _ = await asyncio.gather(decodes, long())
        await sim.close()
        return list(out)

    spans = asyncio.run(main())
    beside = [tpot for first, last, tpot in spans if first < long_at[0] < last]
    ttft = long_first[0] - long_at[0] if long_first else None
    return chunks, beside, ttft


def test_slo_slack_chunks_a_long_prompt_under_running_decodes_and_lowers_their_tpot() -> None:
    fixed_chunks, fixed_tpot, fixed_ttft = _serve("fixed")
    slack_chunks, slack_tpot, slack_ttft = _serve("slo_slack")
    # deterministic (seeded step times, virtual time): fixed runs 5 decodes beside
    # the prompt in chunks 8,187 + 3,813; slo_slack in 4,638, 1,587, ..., 266
    assert len(fixed_tpot) >= 4 and len(slack_tpot) >= 4  # decodes ran beside the prompt
    # vLLM's fixed budget gives the long prompt all the step has left beside the decodes
    assert max(fixed_chunks) >= 8192 - DECODES
    # the slack budget cuts it into smaller chunks (the first spends the decodes'
    # banked slack), above its floor: the prompt progresses
    assert 64 <= max(slack_chunks) <= 0.6 * max(fixed_chunks)
    assert len(slack_chunks) > len(fixed_chunks)
    # ... so the decodes running beside it keep a lower TPOT (worst and mean)
    assert max(slack_tpot) < max(fixed_tpot)
    assert np.mean(slack_tpot) < np.mean(fixed_tpot)
    # and the long prompt still gets its first token, later (the trade)
    assert fixed_ttft is not None and slack_ttft is not None
    assert fixed_ttft < slack_ttft < 10 * fixed_ttft
