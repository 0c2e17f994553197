"""``cascade bench ab --telemetry-off --interleave K``: Cascade with and without
telemetry, redeployed per round in ABBA order, each on the same workload slice,
merged into one row per system plus the telemetry on/off ratio row. The deploy,
the client and ``cascade down`` are replaced by recorders (no Ray here)."""

from __future__ import annotations

import argparse
import types
from pathlib import Path
from typing import Any

import pytest

from experiments.benchmarks import ab
from orchestrator import serve_cli


def _result(n: int, ttft_s: float, e2e_s: float) -> dict[str, Any]:
    # what `vllm bench serve` saves (ms quantiles are recomputed by merge_results)
    return {
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
        "cpu_s": {"ray::ServeReplica:llm": 1.0},
    }


def test_rounds_alternate_and_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(serve_cli, "run_down", lambda _ns: events.append("down"))
    monkeypatch.setattr(ab, "deploy_cascade", lambda cfg, *_a: events.append(f"up:{cfg}"))
    slices: dict[str, list[str]] = {}

    def drive(args: Any, system: str, rate: float, *_a: Any, **kw: Any) -> dict[str, Any]:
        slices.setdefault(system, []).append(Path(_a[2]).name)  # the round's workload file
        events.append(f"drive:{system}")
        # telemetry off answers 10 % faster: the ratio row must say so
        scale = 0.9 if system == ab.TELEMETRY_OFF else 1.0
        return _result(kw["n"], 0.1 * scale, 1.0 * scale)

    monkeypatch.setattr(ab, "drive_client", drive)
    trace = types.SimpleNamespace()
    monkeypatch.setattr(ab, "workload_rows", lambda _t, w: [{"prompt": str(i)} for i in range(w.n)])
    monkeypatch.setattr(ab, "write_workload", lambda rows, path: Path(path))
    args = argparse.Namespace(
        interleave=4, requests=20, trace="azure-conv", prompt_scale=0.125, max_output=128,
        burstiness=0.25, seed=0, num_cpus=8, timeout=900.0,
    )  # fmt: skip
    cfg = types.SimpleNamespace(model=types.SimpleNamespace(name="m"))
    configs = {"cascade": "on.yaml", ab.TELEMETRY_OFF: "off.yaml"}
    rows = ab._run_alternating(args, cfg, configs, [2.0], trace, "tok", tmp_path)

    ups = [e.removeprefix("up:") for e in events if e.startswith("up:")]
    assert ups == ["on.yaml", "off.yaml", "off.yaml", "on.yaml"] * 2  # ABBA, twice
    # every deploy is torn down before the next one comes up
    for i, e in enumerate(events):
        if e.startswith("up:"):
            assert events[i - 1] == "down"
    # both systems ran the same four slices, in order
    expected = [f"workload-k{k}.jsonl" for k in range(4)]
    assert slices["cascade"] == expected and slices[ab.TELEMETRY_OFF] == expected
    by_system = {r["system"]: r for r in rows if "system" in r}
    assert by_system["cascade"]["completed"] == 20 and by_system["cascade"]["rounds"] == 4
    assert by_system["cascade"]["cpu_s"] == {"ray::ServeReplica:llm": 4.0}
    ratio = next(r for r in rows if r.get("ratios") == "telemetry on/off")
    assert ratio["ttft_p50_s"] == pytest.approx(1 / 0.9)
    assert ratio["e2e_p99_s"] == pytest.approx(1 / 0.9)
