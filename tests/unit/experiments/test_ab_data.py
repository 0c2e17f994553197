"""The pure half of ``cascade bench ab``: workload, client arguments, summaries."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from experiments.benchmarks.ab_data import (
    Workload,
    ab_table_rows,
    client_args,
    latency_samples,
    merge_results,
    ratios,
    summarize,
    workload_rows,
    write_workload,
)
from orchestrator.traces import Trace


def _trace() -> Trace:
    return Trace(
        name="t",
        arrival_s=np.array([0.0, 1.0, 2.0]),
        prompt_tokens=np.array([800, 3, 16]),
        output_tokens=np.array([500, 0, 7]),
    )


def test_workload_scales_prompts_and_caps_outputs(tmp_path: Path) -> None:
    rows = workload_rows(_trace(), Workload("t", 3, prompt_scale=1 / 8, max_output=128))
    # 800/8 = 100 words; 3/8 rounds up to 1; outputs capped at 128, at least 1
    assert [len(r["prompt"].split()) for r in rows] == [100, 1, 2]
    assert [r["output_tokens"] for r in rows] == [128, 1, 7]
    path = write_workload(rows, tmp_path / "w.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows


def test_workload_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="requests must be >= 1"):
        Workload("t", 0)
    with pytest.raises(ValueError, match="prompt_scale"):
        Workload("t", 1, prompt_scale=0.0)
    with pytest.raises(ValueError, match="has 3 requests, 4 asked for"):
        workload_rows(_trace(), Workload("t", 4))


def test_client_args_are_vllm_bench_serve_flags(tmp_path: Path) -> None:
    args = client_args(
        base_url="http://h:1", model="m", tokenizer="tok", dataset=tmp_path / "d.jsonl", n=10,
        rate=2.5, burstiness=0.25, seed=3, result_dir=tmp_path, result_file="r.json",
    )  # fmt: skip
    pairs = dict(itertools.pairwise(args))
    assert pairs["--request-rate"] == "2.5" and pairs["--burstiness"] == "0.25"
    assert pairs["--num-prompts"] == "10" and pairs["--dataset-name"] == "custom"
    assert "--ignore-eos" in args and "--save-detailed" in args
    with pytest.raises(ValueError, match="rate"):
        client_args(
            base_url="u", model="m", tokenizer="t", dataset=tmp_path, n=1, rate=float("inf"),
            burstiness=1.0, seed=0, result_dir=tmp_path, result_file="r",
        )  # fmt: skip


RESULT = {
    "completed": 9, "failed": 1, "duration": 10.0, "request_throughput": 0.9,
    "output_throughput": 90.0,
    "median_ttft_ms": 100.0, "p90_ttft_ms": 200.0, "p99_ttft_ms": 400.0,
    "median_e2el_ms": 1000.0, "p90_e2el_ms": 2000.0, "p99_e2el_ms": 3000.0,
    "ttfts": [0.1, 0.2, 0.0], "latencies": [1.0, 2.0, 0.0], "errors": ["", "", "boom"],
}  # fmt: skip


def test_summarize_converts_to_seconds_and_keeps_failures() -> None:
    row = summarize("stock", RESULT)
    assert row["served_req_s"] == 0.9 and row["failed"] == 1 and row["completed"] == 9
    assert row["ttft_p50_s"] == pytest.approx(0.1) and row["ttft_p99_s"] == pytest.approx(0.4)
    assert row["e2e_p99_s"] == pytest.approx(3.0)
    assert row["tpot_p99_s"] is None  # not in the result: unknown, not zero


def test_latency_samples_drop_failed_requests() -> None:
    s = latency_samples(RESULT)
    assert s["ttft"].tolist() == [0.1, 0.2] and s["e2e"].tolist() == [1.0, 2.0]


def _round(ttfts: list[float], lats: list[float], outs: list[int], dur: float) -> dict:
    return {
        "completed": len(lats), "failed": 0, "duration": dur, "ttfts": ttfts,
        "latencies": lats, "output_lens": outs, "input_lens": [10] * len(lats),
        "itls": [[0.01] * (n - 1) for n in outs], "errors": [""] * len(lats),
        "total_output_tokens": sum(outs), "total_input_tokens": 10 * len(lats),
    }  # fmt: skip


def test_merged_rounds_are_one_run_of_all_their_requests() -> None:
    a = _round([0.1, 0.2], [1.0, 2.0], [11, 21], 10.0)
    b = _round([0.3, 0.4, 0.5], [3.0, 4.0, 5.0], [2, 3, 1], 5.0)
    b["errors"][1], b["failed"], b["completed"] = "HTTP 500", 1, 2  # one failure
    m = merge_results([a, b])
    assert (m["completed"], m["failed"], m["duration"]) == (4, 1, 15.0)
    assert m["request_throughput"] == pytest.approx(4 / 15)
    assert m["output_throughput"] == pytest.approx((11 + 21 + 2 + 3 + 1) / 15)
    row = summarize("x", m)  # the failed request (0.4 s, 4 s) is in no quantile
    assert row["ttft_p50_s"] == pytest.approx(np.percentile([0.1, 0.2, 0.3, 0.5], 50))
    assert row["e2e_p99_s"] == pytest.approx(np.percentile([1.0, 2.0, 3.0, 5.0], 99))
    tpot = [0.9 / 10, 1.8 / 20, 2.7 / 1]  # (E2E - TTFT) / (out - 1), out > 1 only
    assert row["tpot_p50_s"] == pytest.approx(np.percentile(tpot, 50))
    assert row["itl_p99_s"] == pytest.approx(0.01)
    assert latency_samples(m)["e2e"].tolist() == [1.0, 2.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="no results"):
        merge_results([])


def test_ratios_and_table() -> None:
    stock = summarize("stock-pow2", RESULT)
    cascade = {**stock, "system": "cascade", "served_req_s": 0.99, "e2e_p99_s": 1.5}
    r = ratios(cascade, stock)
    assert r["served_req_s"] == pytest.approx(1.1) and r["e2e_p99_s"] == pytest.approx(0.5)
    assert r["tpot_p99_s"] is None
    rows = [stock, cascade, {"system": "stock-prefix", "error": "RuntimeError: x"}]
    rows.append({"ratios": "cascade/stock", "best_stock": "stock-pow2", "best": r})
    rows.append({"ratios": "b/a", "rate": 2.0, **ratios(cascade, stock)})  # --against-config
    ci = {"ratio": 1.0, "ci95": [0.5, 1.25], "rounds_lower": 2, "rounds": 4}
    keys = ("ttft_p50_s", "ttft_p99_s", "e2e_p50_s", "e2e_p99_s")
    rows.append({"round_stats": "cascade/stock-pow2", "rate": 14.0, **dict.fromkeys(keys, ci)})
    table = ab_table_rows(rows)
    assert [t[0] for t in table] == [
        "stock-pow2", "cascade", "stock-prefix", "cascade/stock-pow2", "b/a @ 2/s",
        "cascade/stock-pow2 95% CI @ 14/s",
    ]  # fmt: skip
    assert table[5][4] == "0.50-1.25" and table[5][1] == "" and len(table[5]) == len(table[0])
    assert table[1][7] == "1.50" and table[3][7] == "0.50" and "error" in table[2][1]
    assert table[4][1] == "1.10" and table[4][7] == "0.50" and table[4][5] == "-"


def test_rates_parse_and_refuse_bad_input() -> None:
    from experiments.benchmarks.ab import parse_rates, parse_routers

    assert parse_rates("0.7, 2.9,6") == [0.7, 2.9, 6.0] and parse_rates(2.5) == [2.5]  # type: ignore[arg-type]
    for bad in ("", "0", "-1", "inf", "fast"):
        with pytest.raises(ValueError, match="--rate"):
            parse_rates(bad)
    assert parse_routers("pow2,capacity") == ["pow2", "capacity"]
    with pytest.raises(ValueError, match="unknown"):
        parse_routers("pow2,random")
