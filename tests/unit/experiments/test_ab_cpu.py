"""CPU metering of the A/B bench: per process, summed by role."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.benchmarks.ab_systems_cli import _role, cpu_delta


def test_roles_drop_the_method_and_the_app() -> None:
    assert _role("ray::ServeController.listen_for_change") == "ray::ServeController"
    assert _role("ray::ServeController") == "ray::ServeController"
    assert _role("ray::ServeReplica:stock-pow2:LLMServer:llm") == "ray::ServeReplica:LLMServer:llm"
    assert _role("ray::ServeReplica:cascade:llm") == "ray::ServeReplica:llm"
    assert _role("ray::ServeReplica:cascade:cascade-ingress.handle_request") == (
        "ray::ServeReplica:cascade-ingress"
    )
    assert _role("VLLM::EngineCore") == "VLLM::EngineCore"


def test_a_retitled_process_counts_only_what_it_spent_between_readings() -> None:
    """The bug this replaces: keyed by title, a process whose title changed between
    the readings (Ray retitles an actor with its current task) was credited its
    whole life's CPU (40 s) instead of the 2 s it spent."""
    before = {7: ("ray::ServeController", 38.0), 8: ("VLLM::EngineCore", 10.0)}
    after = {
        7: ("ray::ServeController", 40.0),
        8: ("VLLM::EngineCore", 13.5),
        9: ("VLLM::EngineCore", 1.25),  # started in between: counts in full
    }
    assert cpu_delta(before, after) == {"VLLM::EngineCore": 4.75, "ray::ServeController": 2.0}


def test_stock_bind_is_one_value_for_every_replica_and_never_distinct() -> None:
    from experiments.benchmarks.ab_systems_cli import stock_pool
    from orchestrator.config import load_config
    from replicas.vllm_config import llm_config_kwargs

    cfg = load_config(Path(__file__).resolve().parents[3] / "examples" / "ab-cpu.yaml")
    pool = cfg.pools[0]
    assert stock_pool(pool, None) is pool
    nobind = stock_pool(pool, "nobind")
    assert nobind.engine_overrides["cpu_threads_bind"] == "nobind"
    assert pool.engine_overrides["cpu_threads_bind"] == "distinct"  # the config is untouched
    kw = llm_config_kwargs(cfg.model, nobind, device="cpu")
    assert kw["runtime_env"] == {"env_vars": {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}}
    with pytest.raises(ValueError, match="--stock-bind distinct"):
        stock_pool(pool, "distinct")
