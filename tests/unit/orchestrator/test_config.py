"""The one Cascade YAML: the examples load, bad files are refused with key paths."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from orchestrator.config import DEFAULT_CONFIG, EXAMPLES_DIR, load_config, parse_config
from orchestrator.request_info import request_info_from_body


def _default() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def test_default_example_loads_and_feeds_the_policies() -> None:
    cfg = load_config()
    assert [p.name for p in cfg.pools] == ["llm-h100", "llm-a100"]
    assert cfg.pool("llm-h100").start_replicas == 8
    pc = cfg.policy_config()
    assert pc.slos is not None and pc.slos["default"].ttft_s == 2.0
    assert cfg.router.scorers[0].type == "uncertainty"


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.glob("*.yaml")))
def test_every_top_level_example_is_valid(path: Path) -> None:
    load_config(path)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(colour="red"), "colour: unknown key"),
        (lambda d: d["pools"][1].update(max_replicas=1), "pools[1]"),
        (lambda d: d["pools"][0].update(tp_size=0), "pools[0].tp_size"),
        (lambda d: d["pools"][1].update(name="llm-h100"), "unique"),
        (lambda d: d.update(pools=[]), "pools"),
        (lambda d: d["slos"].update(default_class="gold"), "default_class 'gold'"),
        (lambda d: d["slos"]["classes"][0].update(ttft_s=-1), "slos.classes[0].ttft_s"),
        (lambda d: d.update(router={"scorers": [{"type": "nope"}]}), "accepted"),
        (lambda d: d.update(router={"scorers": [{"type": "kv_usage", "weight": -1}]}), "weight"),
        (lambda d: d["optimizer"].update(rho_max=1.5), "optimizer.rho_max"),
        (lambda d: d["model"].update(engine="tgi"), "model.engine"),
        (lambda d: d["model"].update(first_chunk="early"), "model.first_chunk"),
    ],
)
def test_invalid_content_is_refused_with_the_key_path(mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    d = _default()
    mutate(d)
    with pytest.raises(ValueError) as err:
        parse_config(d, "x.yaml")
    assert expected in str(err.value)
    assert str(err.value).startswith("x.yaml: ")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools:\n  - name: a\n   accelerator: [\n")
    with pytest.raises(ValueError, match=r"bad.yaml:\d+:\d+: invalid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(listy)


def test_the_cluster_example_classes_requests_by_prompt_length() -> None:
    """examples/cluster.yaml: a prompt of at most 4,096 tokens is interactive, a
    longer one batch (the default class); a named class wins over the length."""
    slos = load_config(EXAMPLES_DIR / "cluster.yaml").slos

    def cls(prompt: list[int], asked: str | None = None) -> str:
        body = SimpleNamespace(prompt=prompt, max_tokens=64, cascade_class=asked)
        return request_info_from_body(body, "r", slos=slos, with_hashes=False).slo_class

    assert cls([1] * 100) == cls([1] * 4096) == "interactive"
    assert cls([1] * 4097) == cls([1] * 8000) == "batch"
    assert cls([1] * 100, asked="batch") == "batch"
    assert cls([1] * 8000, asked="interactive") == "interactive"
    assert cls([1] * 100, asked="gold") == "interactive"  # unknown name: by length


def test_slo_slack_targets_the_tightest_class_and_names_the_known_budgets() -> None:
    from typing import get_args

    from orchestrator.config import ModelConfig
    from replicas.prefill_budget import PREFILL_BUDGETS

    assert get_args(ModelConfig.model_fields["prefill_budget"].annotation) == PREFILL_BUDGETS
    classes = [
        {"name": "chat", "ttft_s": 2.0, "tpot_s": 0.1},
        {"name": "agent", "ttft_s": 1.0, "tpot_s": 0.04, "max_prompt_tokens": 512},
    ]
    data = {
        "pools": [{"name": "a", "accelerator": "H100"}],
        "slos": {"default_class": "chat", "classes": classes},
    }
    assert parse_config(data).prefill_tpot_s() is None  # fixed: no target
    slack = parse_config({**data, "model": {"prefill_budget": "slo_slack"}})
    assert slack.prefill_tpot_s() == 0.04 == slack.slos.tightest_tpot_s()
    with pytest.raises(ValueError, match="prefill_budget"):
        parse_config({**data, "model": {"prefill_budget": "adaptive"}})
