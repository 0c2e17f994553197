"""``cascade bench fidelity`` without Ray or vLLM: the error and bar arithmetic,
the replay built from a saved ``vllm bench serve`` result, the mapping of the
deployed engine's settings, and the sim side end to end (``--sim-only``) on
"real" results that are themselves a simulation (sim vs sim: zero error)."""

from __future__ import annotations

import argparse
import csv
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from experiments.benchmarks.ab_data import client_args
from experiments.benchmarks.fidelity import DEFAULT_CONFIG, _engine_kwargs, parse_loads
from experiments.benchmarks.fidelity_calibrate import serving_overhead
from experiments.benchmarks.fidelity_replay import (
    Replay,
    cpu_kv_blocks,
    replay_from_result,
    sim_setup,
)
from experiments.benchmarks.fidelity_report import (
    LatencySamples,
    bars_summary,
    compare,
    rel_error,
)
from orchestrator.cli import main
from orchestrator.config import load_config
from tests.unit.experiments.fidelity_fakes import requests as _requests
from tests.unit.experiments.fidelity_fakes import result as _result
from tests.unit.experiments.fidelity_fakes import simulated as _simulated

DATA = Path(__file__).parent / "data"
PROFILE = DATA / "sim_profile_small.csv"  # cascade profile --engine sim --small --repeats 3
RESULT = DATA / "fidelity_result_small.json"


def _samples(scale: float = 1.0) -> LatencySamples:
    x = np.arange(1, 101, dtype=float) / 100  # 0.01 .. 1.00 s
    return LatencySamples.from_times(scale * x, scale * 10 * x, np.full(100, 11))


# ---- errors and bars ---------------------------------------------------------------
def test_errors_and_bars_on_hand_made_numbers() -> None:
    real = _samples()
    rows = {r["metric"]: r for r in compare(real, _samples(1.04))}
    # every quantile of every metric is 4 % high: P50 and P99 bars hold
    for r in rows.values():
        assert r["err_p50"] == pytest.approx(0.04) and r["err_p99"] == pytest.approx(0.04)
        assert r["p50_ok"] and r["p99_ok"] and r["n_real"] == r["n_sim"] == 100
    assert rows["ttft"]["real_p50_s"] == pytest.approx(0.505)  # np.percentile, linear
    # TPOT = (E2E - TTFT) / (11 - 1) = (10 x - x) / 10 = 0.9 x
    assert rows["tpot"]["real_p99_s"] == pytest.approx(0.9 * np.percentile(real.ttft, 99))
    eight = compare(real, _samples(0.92))  # 8 % low: P50 misses, P99 holds
    assert all(not r["p50_ok"] and r["p99_ok"] for r in eight)
    assert all(r["err_p50"] == pytest.approx(-0.08) for r in eight)
    s = bars_summary(eight)
    assert (s["bars_met"], s["bars_total"], s["all_met"]) == (3, 6, False)
    assert s["worst_abs_err_p50"] == pytest.approx(0.08)
    assert bars_summary(compare(real, real))["all_met"]
    assert not any(r["p99_ok"] for r in compare(real, _samples(1.2)))


def test_relative_error_is_undefined_without_a_positive_real_value() -> None:
    assert rel_error(1.1, 1.0) == pytest.approx(0.1)
    assert rel_error(None, 1.0) is None and rel_error(1.0, None) is None
    assert rel_error(1.0, 0.0) is None and rel_error(float("nan"), 1.0) is None
    empty = LatencySamples.from_times([], [], [])
    rows = compare(_samples(), empty)
    assert all(r["err_p50"] is None and r["p50_ok"] is False for r in rows)


def test_tpot_leaves_out_one_token_outputs() -> None:
    s = LatencySamples.from_times([0.1, 0.1], [0.1, 0.5], [1, 5])
    assert np.isnan(s.tpot[0]) and s.tpot[1] == pytest.approx(0.1)
    assert s.metric("tpot").tolist() == [pytest.approx(0.1)]
    with pytest.raises(ValueError, match="lengths differ"):
        LatencySamples(np.zeros(2), np.zeros(1), np.zeros(2))


# ---- the replay --------------------------------------------------------------------
def test_replay_from_a_saved_result_file() -> None:
    rep = replay_from_result(json.loads(RESULT.read_text()), str(RESULT))
    # by send time; the failed request (index 3) left out; arrivals from the first send
    assert rep.arrival_s.tolist() == [0.0, 0.5, 1.25, 2.0]
    assert rep.prompt_tokens.tolist() == [100, 40, 7, 65]
    assert rep.output_tokens.tolist() == [2, 11, 1, 5]
    assert rep.dropped == 1 and len(rep) == 4
    assert rep.real.ttft.tolist() == [0.2, 0.1, 0.05, 0.15]
    assert rep.real.tpot[0] == pytest.approx(0.3) and rep.real.tpot[1] == pytest.approx(0.02)
    assert np.isnan(rep.real.tpot[2]) and rep.real.tpot[3] == pytest.approx(0.1)
    trace = rep.trace(32, shared_prefix=True)
    # one prefix hash per full 32-token block; every prompt is a prefix of a longer one
    assert trace.hashes == ((0, 1, 2), (0,), (), (0, 1)) and trace.prefix_unit_tokens == 32
    assert rep.trace(32, shared_prefix=False).hashes == ()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.pop("start_times"), "--save-detailed"),
        (lambda r: r["ttfts"].pop(), "differ in length"),
        (lambda r: r.update(errors=["x"] * 5), "no successful request"),
        (lambda r: r["input_lens"].__setitem__(0, 0), "input_lens"),
    ],
)
def test_replay_refuses_bad_results(edit: Any, message: str) -> None:
    result = json.loads(RESULT.read_text())
    edit(result)
    with pytest.raises(ValueError, match=message) as info:
        replay_from_result(result, "r.json")
    assert "r.json" in str(info.value)


# ---- the engine mapping ------------------------------------------------------------
def test_sim_engine_takes_the_deployed_vllm_settings() -> None:
    cfg = load_config(DEFAULT_CONFIG)
    kwargs = _engine_kwargs(cfg)
    setup, mapping = sim_setup(cfg, kwargs, PROFILE, num_blocks=5000)
    (pool,) = setup.pools
    ec = pool.engine_config()
    # examples/ab-cpu.yaml: 32 seqs, 1,024 batched tokens, block 32 (CPU), 2,048 context
    assert (ec.max_num_seqs, ec.max_num_batched_tokens) == (32, 1024)
    assert (ec.block_size, ec.prefix_unit_tokens, ec.max_model_len) == (32, 32, 2048)
    assert ec.num_blocks == 5000 and pool.replicas == 2 and pool.profile == str(PROFILE)
    assert mapping.settings["enable_prefix_caching"] and mapping.unmodelled == ()
    odd = sim_setup(cfg, {**kwargs, "enable_chunked_prefill": False}, PROFILE, num_blocks=9)[1]
    assert odd.unmodelled == ("enable_chunked_prefill",)
    with pytest.raises(ValueError, match="no 'block_size'"):
        sim_setup(cfg, {k: v for k, v in kwargs.items() if k != "block_size"}, PROFILE,
                  num_blocks=9)  # fmt: skip


def test_cpu_kv_blocks_of_the_tiny_model() -> None:
    # 2 layers x 4 KV heads x 64 dims x 4 B x (K, V) = 4 KiB per token, 128 KiB per block
    assert cpu_kv_blocks(24 * 2**30, 0.1, layers=2, kv_heads=4, head_dim=64, dtype_bytes=4,
                         block_size=32) == int(0.1 * 24 * 2**30 // 2**17)  # fmt: skip
    with pytest.raises(ValueError, match="KV size"):
        cpu_kv_blocks(1e9, 0.0, layers=2, kv_heads=4, head_dim=64, dtype_bytes=4, block_size=32)


def test_profile_takes_the_configs_engine_arguments() -> None:
    from experiments.profile_cli import add_arguments, vllm_engine_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--out", "x.csv", "--config", str(DEFAULT_CONFIG), "--model", "/m"])
    kw, env = vllm_engine_args(args)
    assert kw["model"] == "/m" and kw["enable_prefix_caching"] is False
    assert (kw["max_num_seqs"], kw["max_num_batched_tokens"], kw["block_size"]) == (32, 1024, 32)
    assert (kw["dtype"], kw["gpu_memory_utilization"], kw["load_format"]) == (
        "float32",
        0.1,
        "dummy",
    )
    assert env == {}
    with pytest.raises(ValueError, match="--model"):
        vllm_engine_args(p.parse_args(["--out", "x.csv"]))
    with pytest.raises(ValueError, match="--pool 'nope'"):
        vllm_engine_args(p.parse_args(["--out", "x", "--config", str(DEFAULT_CONFIG),
                                       "--model", "/m", "--pool", "nope"]))  # fmt: skip


def test_loads_and_the_probe_client_flags(tmp_path: Path) -> None:
    assert parse_loads("0.3, 0.6,0.9") == [0.3, 0.6, 0.9]
    for bad in ("", "0", "-0.5", "inf", "x"):
        with pytest.raises(ValueError, match="--loads"):
            parse_loads(bad)
    args = client_args(
        base_url="u", model="m", tokenizer="t", dataset=tmp_path, n=3, rate=100.0,
        burstiness=1.0, seed=0, result_dir=tmp_path, result_file="p.json", max_concurrency=1,
    )  # fmt: skip
    assert dict(itertools.pairwise(args))["--max-concurrency"] == "1"
    with pytest.raises(ValueError, match="max_concurrency"):
        client_args(base_url="u", model="m", tokenizer="t", dataset=tmp_path, n=3, rate=1.0,
                    burstiness=1.0, seed=0, result_dir=tmp_path, result_file="p",
                    max_concurrency=0)  # fmt: skip


# ---- the sim side end to end -------------------------------------------------------
def test_sim_vs_sim_gives_zero_error_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the "real" results are the simulator's own outcome on the same inputs, plus a
    # 40 ms serving path; the probe (one request at a time) must find that 40 ms,
    # and the replay must then reproduce every latency: zero error, every bar held
    cfg = load_config(DEFAULT_CONFIG)
    setup, _ = sim_setup(cfg, _engine_kwargs(cfg), PROFILE, num_blocks=20000)
    real = tmp_path / "real"
    real.mkdir()
    loads = [0.5, 1.0]
    for k, load in enumerate(loads):
        arr, prompts, outs = _requests(120, 4.0 * load, seed=k)
        s = _simulated(setup, cfg, arr, prompts, outs, overhead=0.04)
        (real / f"load-{load:g}.json").write_text(json.dumps(_result(arr, prompts, outs, s.ttft,
                                                                       s.e2e)))  # fmt: skip
    arr, prompts, outs = np.arange(8) * 5.0, np.full(8, 50), np.full(8, 8)
    s = _simulated(setup, cfg, arr, prompts, outs, overhead=0.04)
    (real / "probe.json").write_text(json.dumps(_result(arr, prompts, outs, s.ttft, s.e2e)))
    meta = {"config": str(DEFAULT_CONFIG), "profile": str(PROFILE), "loads": loads,
            "rates_rps": [2.0, 4.0], "capacity_rps": 4.0, "num_blocks": 20000}  # fmt: skip
    (real / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    assert main(["bench", "fidelity", "--real-results", str(real), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    *per_metric, summary = rows
    assert [(r["load"], r["metric"]) for r in per_metric] == [
        (load, m) for load in loads for m in ("ttft", "tpot", "e2e")
    ]
    for r in per_metric:
        for q in (50, 90, 99):
            assert r[f"err_p{q}"] == pytest.approx(0.0, abs=1e-9), (r["load"], r["metric"], q)
        assert r["requests"] == 120 and r["dropped"] == 0
    assert summary["all_met"] and summary["bars_met"] == summary["bars_total"] == 12
    assert summary["overhead_s"] == pytest.approx(0.04, abs=1e-9)
    # the "real" steps are the profile's: no step cost found; no contention probe
    assert summary["step_overhead_s"] == 0.0 and summary["contention_alpha"] == 0.0
    # ab-cpu.yaml binds each engine to its own core (cpu_threads_bind: distinct):
    # the host model, whose stream cost has no probe here (0: two engines on two
    # cores never stretch)
    assert summary["core_model"] == "host" and summary["host_cores"] >= 1
    assert summary["stream_cost"] == 0.0 and summary["stream_cost_from"].startswith("none")
    assert summary["sim_engine"]["block_size"] == 32 and summary["unmodelled_engine_args"] == []
    assert (out / "fidelity_cdf_l0.5.png").stat().st_size > 0
    assert (out / "fidelity_cdf_l1.png").stat().st_size > 0
    # without the probe's overhead the simulator is fast by the 40 ms on TTFT
    assert main(["bench", "fidelity", "--real-results", str(real), "--out", str(out),
                 "--overhead-s", "0"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ttft = next(r for r in rows if r.get("metric") == "ttft")
    assert ttft["real_p50_s"] - ttft["sim_p50_s"] == pytest.approx(0.04, abs=1e-9)
    assert next(r for r in rows if r.get("metric") == "tpot")["err_p50"] == pytest.approx(0.0)


def test_a_profile_twice_as_slow_doubles_tpot(tmp_path: Path) -> None:
    # requests 5 s apart run alone: every step takes exactly twice as long (the fit
    # is linear in the step times; same noise draws), so TTFT and TPOT double
    slow = tmp_path / "slow.csv"
    with PROFILE.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key in r:
            if key.startswith("time_stats."):
                r[key] = str(2 * float(r[key]))
    with slow.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cfg = load_config(DEFAULT_CONFIG)
    arr, prompts, outs = np.arange(10) * 5.0, np.arange(10) * 30 + 20, np.full(10, 64)
    fast_setup, _ = sim_setup(cfg, _engine_kwargs(cfg), PROFILE, num_blocks=20000)
    slow_setup, _ = sim_setup(cfg, _engine_kwargs(cfg), slow, num_blocks=20000)
    a = _simulated(fast_setup, cfg, arr, prompts, outs)
    b = _simulated(slow_setup, cfg, arr, prompts, outs)
    np.testing.assert_allclose(b.tpot / a.tpot, 2.0, rtol=1e-6)
    np.testing.assert_allclose(b.ttft / a.ttft, 2.0, rtol=1e-6)


def test_serving_overhead_needs_a_probe_request() -> None:
    cfg = load_config(DEFAULT_CONFIG)
    setup, _ = sim_setup(cfg, _engine_kwargs(cfg), PROFILE, num_blocks=20000)
    nan = np.full(2, np.nan)
    probe = Replay(np.array([0.0, 5.0]), np.array([10, 10]), np.array([4, 4]),
                   LatencySamples.from_times(nan, nan, [4, 4]), 0, "probe.json")  # fmt: skip
    with pytest.raises(ValueError, match=r"probe\.json"):
        serving_overhead(setup, probe, cfg)


def test_sim_only_names_the_missing_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "fidelity", "--sim-only", "--out", str(tmp_path)]) == 2
    assert "meta.json" in capsys.readouterr().err
