"""The registry and the config schema: what is accepted, and how errors read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from policies import (
    ADMISSIONS,
    BACKPRESSURES,
    BASELINES,
    FILTERS,
    PICKERS,
    PROFILES,
    SCORERS,
    build_policies,
    build_router,
    load_policy_config,
)
from policies.admission import SloFeasibleAdmission, TokenBudgetAdmission
from policies.backpressure import UncertaintyBackpressure
from policies.registry import Registry
from policies.scorers import UncertaintyScorer

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "policies"


def test_registries_hold_the_issue_names() -> None:
    assert set(SCORERS.names()) >= {
        "least_outstanding",
        "queue_depth",
        "kv_usage",
        "prefix_cache",
        "dynamo_cost",
        "uncertainty",
    }
    assert set(PICKERS.names()) >= {"max_score", "random", "weighted_random", "pow2", "round_robin"}
    assert set(FILTERS.names()) >= {"kv_headroom", "queue_cap", "fresh", "pool"}
    assert set(ADMISSIONS.names()) == {
        "always",
        "queue_cap",
        "token_budget",
        "slo_feasible",
        "expected_slo",
    }
    assert set(BACKPRESSURES.names()) == {"none", "uncertainty"}
    assert set(PROFILES) == {*BASELINES, "uncertainty", "cascade"}


def test_registry_refuses_duplicates_and_reports_accepted_names() -> None:
    reg: Registry[Any] = Registry("widget")
    with pytest.raises(ValueError, match="unknown widget type 'x'; accepted: "):
        reg.get("x")
    with pytest.raises(ValueError, match="already registered"):
        SCORERS.register("kv_usage")(UncertaintyScorer)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_named_profile_builds(name: str) -> None:
    router = build_router(name)
    assert router.name == name


def test_full_config_builds_with_defaults_filled_in() -> None:
    pol = build_policies(
        {
            "router": {"profile": "cascade", "picker": "weighted_random"},
            "admission": {"type": "slo_feasible", "params": {"min_probability": 0.8}},
            "backpressure": "uncertainty",
            "slos": {"default": {"ttft_s": 0.5, "tpot_s": 0.05}, "batch": {"e2e_s": 60}},
        }
    )
    assert pol.router.picker.type_name == "weighted_random"
    assert [s.type_name for s, _ in pol.router.scorers] == [
        "uncertainty",
        "least_outstanding",
        "kv_usage",
    ]
    assert isinstance(pol.admission, SloFeasibleAdmission)
    assert pol.admission.params.min_probability == 0.8
    assert isinstance(pol.backpressure, UncertaintyBackpressure)
    assert pol.backpressure.params.sigma_high_s == 0.02  # default
    # the file's SLO table reaches every SLO-aware policy that did not set its own
    scorer = pol.router.scorers[0][0]
    assert isinstance(scorer, UncertaintyScorer)
    assert scorer.params.slos["batch"].e2e_s == 60
    assert pol.admission.params.slos["default"].ttft_s == 0.5


def test_own_slos_win_over_the_file_table() -> None:
    pol = build_policies(
        {
            "router": {
                "scorers": [{"type": "uncertainty", "params": {"slos": {"default": {"ttft_s": 9}}}}]
            },
            "slos": {"default": {"ttft_s": 1}},
        }
    )
    scorer = pol.router.scorers[0][0]
    assert isinstance(scorer, UncertaintyScorer)
    assert scorer.params.slos["default"].ttft_s == 9


def test_empty_config_is_the_baseline_setting() -> None:
    cfg = load_policy_config({})
    assert cfg.router.scorers == [] and cfg.router.picker.type == "max_score"
    assert cfg.admission.type == "always" and cfg.backpressure.type == "none"


ERRORS: list[tuple[dict[str, Any], str]] = [
    (
        {"router": {"scorers": [{"type": "kv_usage"}, {"type": "prefix_cache", "weight": -1}]}},
        "router.scorers[1].weight: must be >= 0.0 (got -1)",
    ),
    (
        {"router": {"scorers": [{"type": "kv_usage", "weight": float("nan")}]}},
        "router.scorers[0].weight: must be a finite number",
    ),
    (
        {"router": {"scorers": [{"type": "kv_usag"}]}},
        "router.scorers[0].type: unknown scorer type 'kv_usag'; accepted: dynamo_cost, kv_usage, "
        "least_outstanding, prefix_cache, queue_depth, tail_protect, uncertainty",
    ),
    (
        {"router": {"scorers": [{"weight": 1.0}]}},
        "router.scorers[0].type: missing; accepted scorer types: ",
    ),
    (
        {"router": {"picker": "best"}},
        "router.picker.type: unknown picker type 'best'; accepted: max_score",
    ),
    (
        {"router": {"filters": ["nope"]}},
        "router.filters[0].type: unknown filter type 'nope'; accepted: fresh",
    ),
    (
        {"router": {"scorers": [{"type": "uncertainty", "params": {"kapa": 1}}]}},
        "router.scorers[0].params: unknown key 'kapa'; "
        "accepted keys: kappa, metric, objective, output_cv, running_output_tokens, slos, tpot_cv",
    ),
    (
        {"router": {"scorers": [{"type": "uncertainty", "wieght": 1}]}},
        "router.scorers[0]: unknown key 'wieght'; accepted keys: params, type, weight",
    ),
    (
        {"router": {"scorers": [{"type": "uncertainty", "params": {"objective": "fast"}}]}},
        "router.scorers[0].params.objective: "
        "Input should be 'slo_probability', 'expected_slo' or 'mean_kappa_sigma'",
    ),
    ({"router": "pow3"}, "router: unknown router profile 'pow3'; accepted: cascade, dynamo_cost"),
    (
        {"router": {"filters": [{"type": "kv_headroom", "params": {"max_kv_usage": 1.5}}]}},
        "router.filters[0].params.max_kv_usage: must be <= 1.0 (got 1.5)",
    ),
    (
        {"admission": {"type": "slo_feasible", "params": {"min_probability": -0.1}}},
        "admission.params.min_probability: must be >= 0.0 (got -0.1)",
    ),
    (
        {"admission": {"type": "queue"}},
        "admission.type: unknown admission type 'queue'; accepted: always, expected_slo, queue_cap",
    ),
    (
        {"backpressure": {"type": "uncertainty", "params": {"sigma_low_s": 0.05}}},
        "backpressure.params: sigma_low_s (0.05) must be < sigma_high_s (0.02)",
    ),
    (
        {"backpressure": {"type": "uncertainty", "params": {"min_fraction": 0}}},
        "backpressure.params.min_fraction: must be > 0.0 (got 0)",
    ),
    ({"slos": {"default": {}}}, "slos.default: an SLO needs at least one of ttft_s, tpot_s, e2e_s"),
    ({"slos": {"default": {"ttft_s": -1}}}, "slos.default.ttft_s: must be > 0.0 (got -1)"),
    (
        {"routers": {}},
        "(top level): unknown key 'routers'; accepted keys: admission, backpressure, router, slos",
    ),
]


@pytest.mark.parametrize(("data", "message"), ERRORS, ids=[e[1][:40] for e in ERRORS])
def test_invalid_configs_are_refused_with_path_and_accepted_values(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as err:
        load_policy_config(data)
    assert message in str(err.value)


def test_build_router_reports_paths_too() -> None:
    with pytest.raises(ValueError, match=r"router\.scorers\[0\]\.weight: must be >= 0"):
        build_router({"scorers": [{"type": "kv_usage", "weight": -2}]})


def test_yaml_files_and_whole_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "cascade.yaml"
    path.write_text("name: demo\npools: []\nrouter: pow2\nadmission: {type: queue_cap}\n")
    with pytest.raises(ValueError, match="unknown key 'name'"):
        load_policy_config(path)
    cfg = load_policy_config(path, whole_file=True)
    assert cfg.router.profile == "pow2" and cfg.admission.type == "queue_cap"
    bad = tmp_path / "bad.yaml"
    bad.write_text("router: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_policy_config(bad)
    with pytest.raises(FileNotFoundError):
        load_policy_config(tmp_path / "missing.yaml")


def test_token_budget_admission_params() -> None:
    pol = build_policies(
        {"admission": {"type": "token_budget", "params": {"prefill_tokens_per_s": 10}}}
    )
    assert isinstance(pol.admission, TokenBudgetAdmission)
    assert pol.admission.params.prefill_tokens_per_s == 10


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_files_load(path: Path) -> None:
    pol = build_policies(str(path))
    assert pol.router.rank is not None


def test_there_is_an_example_for_every_profile() -> None:
    assert {p.stem for p in EXAMPLES.glob("*.yaml")} >= set(PROFILES)
