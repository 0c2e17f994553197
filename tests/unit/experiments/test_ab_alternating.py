"""``cascade bench ab --against-config B --interleave K`` (and ``--telemetry-off``,
the same path with B derived): two Cascade configs redeployed per round in ABBA
order, each on the same workload slice, merged into one row per config plus a
``B/A`` ratio row and a CDF labelled by config. The deploy, the client, the
trace, the tiny model and ``cascade down`` are replaced by recorders (no Ray
here); the configs are the real example files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml

from experiments.benchmarks import ab
from experiments.benchmarks.ab_data import merge_results
from experiments.benchmarks.ab_pair import (
    TELEMETRY_OFF,
    load_cascade_config,
    pool_shape_differences,
)
from orchestrator import serve_cli, traces
from orchestrator.config import EXAMPLES_DIR
from replicas import vllm_config

FIXED = EXAMPLES_DIR / "ab-cpu.yaml"
SLACK = EXAMPLES_DIR / "ab-cpu-slo-slack.yaml"


def _result(n: int, ttft_s: float, e2e_s: float) -> dict[str, Any]:
    """What `vllm bench serve` saves: per-request lists and its ms quantiles
    (``merge_results`` computes those as the client does)."""
    raw = {
        "completed": n,
        "failed": 0,
        "duration": n / 2.0,
        "input_lens": [64] * n,
        "output_lens": [11] * n,
        "ttfts": [ttft_s] * n,
        "itls": [[(e2e_s - ttft_s) / 10] * 10 for _ in range(n)],
        "latencies": [e2e_s] * n,
        "errors": [""] * n,
        "total_input_tokens": 64 * n,
        "total_output_tokens": 11 * n,
    }
    return {**merge_results([raw]), "cpu_s": {"ray::ServeReplica:llm": 1.0}}


class Recorder:
    """Stands in for Ray, the deploys and the client: records the order of
    ``down``/``up:<config>``/``drive:<system>``, the workload file of each
    drive, and the CDF plot's curve labels. The system labelled ``fast``
    answers 10 % faster."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fast: str) -> None:
        self.events: list[str] = []
        self.slices: dict[str, list[str]] = {}
        self.curves: list[list[str]] = []
        self.fast = fast
        monkeypatch.setattr(serve_cli, "run_down", lambda _ns: self.events.append("down"))
        monkeypatch.setattr(ab, "deploy_cascade", lambda c, *_a: self.events.append(f"up:{c}"))
        monkeypatch.setattr(ab, "deploy_stock", lambda *_a, **_k: self.events.append("up:stock"))
        monkeypatch.setattr(ab, "drive_client", self.drive)
        rows = lambda _t, w: [{"prompt": str(i)} for i in range(w.n)]  # noqa: E731
        monkeypatch.setattr(ab, "workload_rows", rows)
        monkeypatch.setattr(ab, "write_workload", lambda rows, path: Path(path))
        monkeypatch.setattr(ab, "write_cdf_plot", self.plot)
        monkeypatch.setattr(traces, "load_trace", lambda name: object())
        monkeypatch.setattr(vllm_config, "tiny_model_dir", lambda model, pool: Path("tok"))

    def drive(self, args: Any, system: str, rate: float, *a: Any, **kw: Any) -> dict[str, Any]:
        self.slices.setdefault(system, []).append(Path(a[2]).name)  # the round's workload
        self.events.append(f"drive:{system}")
        scale = 0.9 if system == self.fast else 1.0
        return _result(kw.get("n") or args.requests, 0.1 * scale, 1.0 * scale)

    def plot(self, samples: dict[str, Any], path: Path) -> Path:
        self.curves.append(sorted(samples))
        return path

    @property
    def ups(self) -> list[str]:
        return [Path(e.removeprefix("up:")).name for e in self.events if e.startswith("up:")]


def _args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ab.add_arguments(parser)
    return parser.parse_args([
        "--config", str(FIXED), "--rate", "2.0", "--requests", "20", "--burstiness", "0.25",
        "--out", str(tmp_path / "ab"), *extra,
    ])  # fmt: skip


def test_two_configs_alternate_abba_and_are_labelled_by_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(monkeypatch, fast="ab-cpu-slo-slack")
    rows = ab._run(_args(tmp_path, "--against-config", str(SLACK), "--interleave", "4"))

    a, b = FIXED.name, SLACK.name
    assert rec.ups == [a, b, b, a] * 2  # ABBA, twice; no stock router
    for i, e in enumerate(rec.events):  # each deploy is torn down before the next
        if e.startswith("up:"):
            assert rec.events[i - 1] == "down"
    expected = [f"workload-k{k}.jsonl" for k in range(4)]  # same slices, in order
    assert rec.slices == {"ab-cpu": expected, "ab-cpu-slo-slack": expected}
    by_system = {r["system"]: r for r in rows if "system" in r}
    assert sorted(by_system) == ["ab-cpu", "ab-cpu-slo-slack"]
    assert by_system["ab-cpu"]["completed"] == 20 and by_system["ab-cpu"]["rounds"] == 4
    assert by_system["ab-cpu-slo-slack"]["cpu_s"] == {"ray::ServeReplica:llm": 4.0}
    (ratio,) = [r for r in rows if "ratios" in r]
    assert ratio["ratios"] == "ab-cpu-slo-slack/ab-cpu" and ratio["rate"] == 2.0
    assert ratio["ttft_p50_s"] == pytest.approx(0.9) and ratio["e2e_p99_s"] == pytest.approx(0.9)
    assert rec.curves == [["ab-cpu", "ab-cpu-slo-slack"]]


def test_telemetry_off_is_the_same_path_with_a_derived_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(monkeypatch, fast=TELEMETRY_OFF)
    rows = ab._run(_args(tmp_path, "--telemetry-off", "--interleave", "2"))

    off = tmp_path / "ab" / "telemetry-off.yaml"
    assert rec.ups == ["telemetry-off.yaml", FIXED.name, FIXED.name, "telemetry-off.yaml"]
    derived = yaml.safe_load(off.read_text())
    assert derived["loops"]["telemetry"] is False
    assert pool_shape_differences(load_cascade_config("x", str(off)),
                                  load_cascade_config("x", str(FIXED))) == []  # fmt: skip
    (ratio,) = [r for r in rows if "ratios" in r]
    assert ratio["ratios"] == "telemetry on/off"  # on / off: telemetry's cost
    assert ratio["ttft_p50_s"] == pytest.approx(1 / 0.9)
    assert rec.curves == [sorted(["cascade", TELEMETRY_OFF])]


def test_one_at_a_time_runs_stock_then_both_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --interleave the pair joins the stock routers; the cascade/stock
    row compares --config's system (the baseline A) with stock."""
    rec = Recorder(monkeypatch, fast="stock-pow2")
    rows = ab._run(_args(tmp_path, "--against-config", str(SLACK)))
    assert rec.ups == ["stock", FIXED.name, SLACK.name]
    names = [r["ratios"] for r in rows if "ratios" in r]
    assert names == ["ab-cpu-slo-slack/ab-cpu", "cascade/stock"]
    stock = next(r for r in rows if r.get("ratios") == "cascade/stock")
    assert stock["best"]["ttft_p50_s"] == pytest.approx(1 / 0.9)


def _variant(tmp_path: Path, name: str, change: Any) -> Path:
    data = yaml.safe_load(FIXED.read_text())
    change(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_different_pool_is_refused_naming_each_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def grow(d: dict[str, Any]) -> None:
        d["model"]["max_num_seqs"] = 64
        d["model"]["prefill_budget"] = "slo_slack"  # allowed: the compared knob
        d["model"]["first_chunk"] = "batched"  # allowed: how the replica streams
        d["pools"][0]["max_replicas"] = 3

    rec = Recorder(monkeypatch, fast="")
    bigger = _variant(tmp_path, "bigger.yaml", grow)
    with pytest.raises(ValueError) as err:
        ab._run(_args(tmp_path, "--against-config", str(bigger), "--interleave", "2"))
    msg = str(err.value)
    assert "same pool" in msg and str(bigger) in msg
    assert "model.max_num_seqs: 32 vs 64" in msg and "pools[0].max_replicas: 2 vs 3" in msg
    assert "prefill_budget:" not in msg and "first_chunk:" not in msg
    assert rec.events == []  # refused before anything was deployed

    def add_pool(d: dict[str, Any]) -> None:
        d["pools"].append({**d["pools"][0], "name": "llm2"})

    two = _variant(tmp_path, "two.yaml", add_pool)
    with pytest.raises(ValueError, match=r"pools: 1 pool\(s\) vs 2"):
        ab._run(_args(tmp_path, "--against-config", str(two)))


def test_missing_bad_or_doubled_second_config_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(monkeypatch, fast="")
    with pytest.raises(ValueError, match=r"--against-config: no such file: .*nope\.yaml"):
        ab._run(_args(tmp_path, "--against-config", str(tmp_path / "nope.yaml")))
    typo = _variant(tmp_path, "typo.yaml", lambda d: d["model"].update(prefill_budgt="slo_slack"))
    with pytest.raises(ValueError, match=r"--against-config: .*typo.yaml: model.prefill_budgt"):
        ab._run(_args(tmp_path, "--against-config", str(typo)))
    with pytest.raises(ValueError, match="choose one"):
        ab._run(_args(tmp_path, "--against-config", str(SLACK), "--telemetry-off"))
    with pytest.raises(ValueError, match="--config: no such file"):
        ab._run(_args(tmp_path, "--config", str(tmp_path / "gone.yaml")))
    assert rec.events == []


def test_same_file_names_get_distinct_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(monkeypatch, fast="")
    (tmp_path / "b").mkdir()
    twin = tmp_path / "b" / FIXED.name
    twin.write_text(FIXED.read_text())
    rows = ab._run(_args(tmp_path, "--against-config", str(twin), "--interleave", "2"))
    assert sorted(r["system"] for r in rows if "system" in r) == ["ab-cpu-a", "ab-cpu-b"]
    assert [r["ratios"] for r in rows if "ratios" in r] == ["ab-cpu-b/ab-cpu-a"]
    assert len(rec.ups) == 4


def test_the_slo_slack_example_differs_from_ab_cpu_only_in_the_budget() -> None:
    fixed, slack = (
        load_cascade_config("x", str(p)).model_dump(mode="json") for p in (FIXED, SLACK)
    )
    assert fixed["model"].pop("prefill_budget") == "fixed"
    assert slack["model"].pop("prefill_budget") == "slo_slack"
    assert fixed == slack
