"""CPU metering of the A/B bench: per process, summed by role."""

from __future__ import annotations

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
