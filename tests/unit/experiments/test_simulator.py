"""Small end-to-end simulations: sane outcomes per baseline, determinism, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from experiments.client import ClientMaxTokens
from experiments.sim_config import PoolSetup, SimSetup
from experiments.simulator import measure_capacity, simulate
from orchestrator.cli import main
from orchestrator.traces import Trace, load_trace, poisson
from policies.slo import SloClass, SloConfig

# a heterogeneous pool: 2 fast (H100) and 2 slow (A100) replicas, small KV
SETUP = SimSetup(
    pools=(
        PoolSetup("h100", "H100", 2, max_num_seqs=64, max_num_batched_tokens=2048),
        PoolSetup("a100", "A100", 2, max_num_seqs=64, max_num_batched_tokens=2048),
    ),
    slos=SloConfig(classes=(SloClass(ttft_s=1.0, tpot_s=0.05),)),
    window_s=20.0,
)


@pytest.fixture(scope="module")
def trace() -> Trace:
    base = poisson(600, 1.0, np.random.default_rng(0))
    cap = measure_capacity(SETUP, base)
    return base.scaled_to_rate(0.85 * cap)


@pytest.fixture(scope="module")
def results(trace: Trace) -> dict[str, dict[str, float]]:
    return {
        p: simulate(SETUP, trace, p, seed=1).metrics
        for p in ("round-robin", "random", "least-outstanding", "oracle")
    }


def test_every_request_completes_with_sane_metrics(results: dict[str, dict[str, float]]) -> None:
    for m in results.values():
        assert m["completed"] == m["requests"] == 600
        assert 0 < m["ttft_p50_s"] <= m["ttft_p99_s"] < m["e2e_p99_s"]
        assert 0 < m["tpot_p99_s"] < 1.0
        assert 0 <= m["slo_attainment"] <= 1
        assert 0 < m["gpu_util"] <= 1
        assert 0 <= m["kv_usage"] <= 1
        assert m["goodput_per_gpu_s"] > 0


def test_load_aware_beats_round_robin_on_a_heterogeneous_pool(
    results: dict[str, dict[str, float]],
) -> None:
    rr, lo, oracle = results["round-robin"], results["least-outstanding"], results["oracle"]
    assert lo["e2e_p99_s"] < rr["e2e_p99_s"]
    assert lo["ttft_p99_s"] < rr["ttft_p99_s"]
    assert oracle["e2e_p99_s"] < rr["e2e_p99_s"]


def test_deterministic_per_seed(trace: Trace) -> None:
    a = simulate(SETUP, trace, "random", seed=3)
    b = simulate(SETUP, trace, "random", seed=3)
    c = simulate(SETUP, trace, "random", seed=4)
    np.testing.assert_array_equal(a.log.finish_s, b.log.finish_s)
    np.testing.assert_array_equal(a.log.replica, b.log.replica)
    assert not np.array_equal(a.log.finish_s, c.log.finish_s)


@pytest.mark.parametrize("eviction", ["lru", "reuse"])
def test_prefix_trace_runs_and_hits_the_cache(eviction: str) -> None:
    # one replica with a small KV (2,000 blocks: ~62 Mooncake units), so units are
    # evicted and some prefixes come back; both policies must still hit the cache
    tr = load_trace("mooncake").head(300)
    setup = SimSetup(pools=(PoolSetup("h100", "H100", 1, num_blocks=2000, kv_eviction=eviction),))
    m = simulate(setup, tr.scaled_to_rate(1.0), "least-outstanding").metrics
    assert m["completed"] + m["shed"] == 300
    assert m["shed"] == m["rejected"] + m["deferred"]
    assert 0.0 < m["kv_hit_rate"] < 0.5


def test_pool_without_replicas_is_refused() -> None:
    with pytest.raises(ValueError, match="replicas must be >= 1"):
        PoolSetup("x", "H100", 0)
    with pytest.raises(ValueError, match="at least one pool"):
        SimSetup(pools=())


def test_cli_simulate_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main([
        "simulate", "--trace", "poisson", "--load", "0.5", "--duration", "20",
        "--policies", "round-robin,least-outstanding", "--json", "--plot", str(tmp_path),
    ])  # fmt: skip
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["policy"] for r in rows] == ["round-robin", "least-outstanding"]
    for key in ("requests", "completed", "ttft_p50_s", "ttft_p99_s", "tpot_p99_s", "e2e_p50_s",
                "e2e_p99_s", "p99_window_cv", "slo_attainment", "goodput_per_gpu_s", "gpu_util",
                "preemptions", "wall_s"):  # fmt: skip
        assert key in rows[0]
    assert rows[0]["prefill_budget"] == "fixed"  # the default example's
    # goodput over the arrival window: same arrivals, same span, so the policies'
    # ratio is that of their requests within SLO (the last completion plays no part)
    a, b = rows
    assert a["goodput_window_per_gpu_s"] > 0
    assert a["goodput_window_per_gpu_s"] / b["goodput_window_per_gpu_s"] == pytest.approx(
        a["within_slo"] / b["within_slo"], rel=1e-12
    )
    # the run's E2E floor (experiments.e2e_floor) and issue 14's bar against it
    for r in rows:
        assert 0 < r["e2e_floor_p50_s"] <= r["e2e_floor_p99_s"] < r["e2e_p99_s"]
        assert r["e2e_floor_pool"] == "llm-h100"
        assert r["bar_best_baseline"] == "least_outstanding"
        assert r["bar_reachable"] is (r["e2e_floor_p99_s"] <= r["bar_target_e2e_p99_s"])
        assert 0 <= r["e2e_below_floor"] < 0.05 and 0 < r["e2e_tail_ttft_share"] < 1
    assert (tmp_path / "latency_cdf.png").stat().st_size > 0
    assert (tmp_path / "p99_over_time.png").stat().st_size > 0


def test_prefill_budget_override_targets_the_tightest_class() -> None:
    from experiments.simulate_cli import with_overrides

    classes = (
        SloClass(name="chat", ttft_s=1.0, tpot_s=0.08),
        SloClass(name="fast", ttft_s=1.0, tpot_s=0.03),
    )
    setup = SimSetup(pools=SETUP.pools, slos=SloConfig(classes=classes, default_class="chat"))
    slack = with_overrides(setup, None, "slo_slack")
    assert [p.prefill_tpot_slo_s for p in slack.pools] == [0.03, 0.03]
    back = with_overrides(slack, "reuse", "fixed")
    assert [(p.prefill_tpot_slo_s, p.kv_eviction) for p in back.pools] == [(None, "reuse")] * 2
    assert with_overrides(slack, None, None) == slack  # nothing given: nothing changes
    with pytest.raises(ValueError, match="--prefill-budget"):
        with_overrides(setup, None, "adaptive")


def test_cli_prefill_budget_ab_replays_the_same_arrivals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = {}
    for budget in ("fixed", "slo_slack"):
        argv = ["simulate", "--trace", "heavy-tail", "--load", "0.8", "--duration", "10",
                "--policies", "least-outstanding", "--prefill-budget", budget,
                "--json"]  # fmt: skip
        assert main(argv) == 0
        rows[budget] = json.loads(capsys.readouterr().out.splitlines()[0])
    fixed, slack = rows["fixed"], rows["slo_slack"]
    assert (fixed["prefill_budget"], slack["prefill_budget"]) == ("fixed", "slo_slack")
    # the load is a fraction of the config's (fixed) capacity for both
    assert fixed["capacity_rps"] == slack["capacity_rps"]
    assert fixed["requests"] == slack["requests"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--trace", "poisson", "--load", "0"], "--load must be > 0"),
        (["--trace", "/nonexistent/t.csv", "--load", "0.5"], "trace not found"),
        (["--trace", "poisson", "--load", "0.5", "--policies", "nope"], "unknown"),
    ],
)
def test_cli_refuses_bad_input(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", *argv, "--json"]) == 2
    assert message in capsys.readouterr().err


def test_cli_profile_sim_engine(tmp_path: Path) -> None:
    out = tmp_path / "prof.csv"
    assert main(["profile", "--engine", "sim", "--small", "--repeats", "3", "--out", str(out)]) == 0
    from replicas.perf_model import FittedPerfModel

    fit = FittedPerfModel.from_csv(out)
    assert fit.coef[0] > 0 and 0 < fit.cv < 0.5


def test_every_policy_reports_calibration(results: dict[str, dict[str, Any]]) -> None:
    # issue 14 §2: the gateway's prediction for the chosen replica, matched with
    # the outcome, per metric and level; shares in [0, 1]
    for policy, m in results.items():
        for key in ("coverage", "coverage_raw", "coverage_naive"):
            for metric in ("ttft", "tpot", "e2e"):
                for level in ("p50", "p90", "p99"):
                    v = m[key][metric][level]
                    assert v is not None and 0.0 <= v <= 1.0, (policy, key, metric, level)
        assert m["calibration_n"]["corrected"] == m["completed"]
        assert m["length_prediction"]["n"] > 0.8 * m["completed"]
        json.dumps(m)  # no NaN left in the nested tables


def test_a_non_binding_max_tokens_cap_changes_no_baseline(trace: Trace) -> None:
    # the client's max_tokens is never the true length; a cap above every length
    # leaves a baseline's outcome exactly as it was
    a = simulate(SETUP, trace, "least-outstanding", seed=1).metrics
    b = simulate(
        SETUP, trace, "least-outstanding", seed=1, client=ClientMaxTokens("fixed", cap=10**6)
    ).metrics
    for k in ("ttft_p99_s", "e2e_p99_s", "tpot_p99_s", "slo_attainment", "completed"):
        assert a[k] == b[k]


def test_noisy_max_tokens_cut_some_answers(trace: Trace) -> None:
    client = ClientMaxTokens.parse("multiple:2:0.5")
    caps = client.draw(trace.output_tokens, np.random.default_rng(0))
    cut = np.mean(caps < trace.output_tokens)
    assert 0.03 < cut < 0.15  # Φ(−log 2 / 0.5) ≈ 8 %
    res = simulate(SETUP, trace, "least-outstanding", seed=1, client=client)
    assert res.log.output_tokens.sum() < trace.output_tokens.sum()
    with pytest.raises(ValueError, match="max-tokens"):
        ClientMaxTokens.parse("cap:12")


@pytest.mark.parametrize("num_blocks", [120, None])
def test_wasted_compute_counters_on_a_tiny_run(num_blocks: int | None) -> None:
    # one A100 replica; 120 blocks (1,920 tokens) force preemptions, the default
    # KV (thousands of blocks) none. An unreachable TPOT (1 µs) makes every
    # multi-token answer miss: all its output tokens are wasted.
    setup = SimSetup(
        pools=(PoolSetup("a", "A100", 1, max_num_seqs=64, num_blocks=num_blocks),),
        slos=SloConfig(classes=(SloClass(ttft_s=1e3, tpot_s=1e-6),)),
    )
    tr = poisson(80, 1.0, np.random.default_rng(5)).scaled_to_rate(40.0)
    tr = Trace(tr.name, tr.arrival_s, np.minimum(tr.prompt_tokens, 600),
               np.minimum(tr.output_tokens, 300), tr.hashes)  # fmt: skip
    res = simulate(setup, tr, "round-robin", seed=2)
    m = res.metrics
    assert m["completed"] == 80
    if num_blocks is None:
        assert m["preemptions"] == 0 and m["recomputed_tokens"] == 0
    else:
        assert m["preemptions"] > 0 and m["recomputed_tokens"] > 0
    multi = res.log.output_tokens[res.log.output_tokens > 1]
    assert m["missed_slo_output_tokens"] == int(multi.sum())
    assert m["cancelled_output_tokens"] == 0  # the simulated client never cancels
    assert m["wasted_output_frac"] == pytest.approx(multi.sum() / res.log.output_tokens.sum())
