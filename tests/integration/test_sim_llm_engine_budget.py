"""``SimLLMEngine`` (the Ray tier's simulated engine) honours ``model.prefill_budget``:
built as the app builds it (``orchestrator.app.sim_engine_cls``), its scheduler
runs the ``slo_slack`` budget against the tightest class ``tpot_s``, or vLLM's
fixed budget. Ray is imported, not started (the engine is constructed directly);
the behaviour itself is tested in tests/unit/orchestrator/test_sim_engine_options.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from orchestrator.config import parse_config


@pytest.mark.parametrize(("budget", "slo"), [("fixed", None), ("slo_slack", 0.05)])
def test_sim_llm_engine_runs_the_configured_prefill_budget(budget: str, slo: float | None) -> None:
    from orchestrator.app import sim_engine_cls

    cfg = parse_config(
        {
            "model": {"engine": "sim", "prefill_budget": budget, "prefill_min_tokens": 128},
            "pools": [{"name": "h100", "accelerator": "H100", "initial_replicas": 1}],
            "slos": {"classes": [{"name": "default", "ttft_s": 2.0, "tpot_s": 0.05}]},
        }
    )
    engine = sim_engine_cls(cfg, cfg.pools[0])(
        SimpleNamespace(engine_kwargs=None, model_id=cfg.model.name)
    )
    model = engine.engine.engine  # SimEngine -> EngineModel
    assert model.config.prefill_tpot_slo_s == slo
    if slo is None:
        assert model.prefill is None
    else:
        assert model.prefill is not None
        assert model.prefill.tpot_slo_s == slo and model.prefill.min_tokens == 128
