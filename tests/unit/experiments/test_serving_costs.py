"""The deployment costs outside the step profile, in the cluster simulator and in
``cascade bench fidelity``'s calibration: zero settings change nothing (bit for
bit), shared cores stretch steps only while engines of one group are busy
together, and each measured term is recovered from probes whose "real"
latencies are the simulator's own with known terms (sim vs sim)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from experiments.benchmarks.fidelity import DEFAULT_CONFIG, _engine_kwargs
from experiments.benchmarks.fidelity_calibrate import (
    fit_contention,
    fit_streams,
    serving_overhead,
    step_overhead,
    with_serving_costs,
)
from experiments.benchmarks.fidelity_replay import sim_setup
from experiments.sim_config import PoolSetup, SimSetup
from experiments.simulator import simulate
from orchestrator.cli import main
from orchestrator.config import load_config
from orchestrator.traces import Trace, poisson
from replicas.core_sharing import CoreSharing
from tests.unit.experiments.fidelity_fakes import requests, write_real

DATA = Path(__file__).parent / "data"
PROFILE = DATA / "sim_profile_small.csv"  # ~11 ms steps, CV ~0.1 %
POOL = PoolSetup(
    "cpu", "CPU", 2, profile=str(PROFILE), max_num_seqs=32, max_num_batched_tokens=1024,
    num_blocks=20000,
)  # fmt: skip
SETUP = SimSetup(pools=(POOL,))


def _log(setup: SimSetup, trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    log = simulate(setup, trace, "round_robin", seed=1).log
    return log.first_token_s, log.finish_s


def _pair(output: int = 200) -> Trace:
    """Two alike requests at once: round robin gives each engine one."""
    return Trace("pair", np.array([0.0, 1e-6]), np.array([100, 100]), np.array([output] * 2))


def _tpot(setup: SimSetup, trace: Trace) -> np.ndarray:
    first, finish = _log(setup, trace)
    return (finish - first) / (trace.output_tokens - 1)


# ---- the simulator -----------------------------------------------------------------
def test_zero_settings_reproduce_the_unshared_simulator_exactly() -> None:
    trace = poisson(300, 40.0, np.random.default_rng(0))  # busy: engines overlap
    base = _log(SETUP, trace)
    for setup in (
        replace(SETUP, core_sharing=CoreSharing(2, 0.0)),  # no slowdown
        replace(SETUP, core_sharing=CoreSharing(1, 0.8)),  # nobody shares
        with_serving_costs(SETUP, step_overhead_s=0.0),
    ):
        got = _log(setup, trace)
        np.testing.assert_array_equal(got[0], base[0])
        np.testing.assert_array_equal(got[1], base[1])
    # and the terms do change a busy run when set
    shared = _log(replace(SETUP, core_sharing=CoreSharing(2, 0.5)), trace)
    assert np.nanmean(shared[1]) > np.nanmean(base[1])


def test_shared_cores_stretch_steps_only_while_peers_are_busy() -> None:
    pair = _pair()
    alone = _tpot(SETUP, pair)
    shared = _tpot(replace(SETUP, core_sharing=CoreSharing(2, 0.5)), pair)
    # both engines decode side by side: every step but the first prefill of the
    # first engine and the other's last step alone is 1.5x (within 1 %)
    np.testing.assert_allclose(shared / alone, 1.5, rtol=0.01)
    apart = _tpot(replace(SETUP, core_sharing=CoreSharing(1, 0.5)), pair)
    np.testing.assert_array_equal(apart, alone)  # groups of one: no stretch at all
    # one request at a time (5 s apart): never two busy, so nothing changes
    solo = Trace("solo", np.arange(6) * 5.0, np.full(6, 100), np.full(6, 200))
    np.testing.assert_array_equal(
        _tpot(replace(SETUP, core_sharing=CoreSharing(2, 0.5)), solo), _tpot(SETUP, solo)
    )


def test_a_peer_going_idle_ends_the_stretch_of_a_running_decode() -> None:
    # engine 0 decodes 400 tokens, engine 1 50, side by side at alpha 1 (each
    # step twice as long while both run); engine 0's fast-forwarded run (up to
    # 256 steps) must be cut when engine 1 finishes, so it loses exactly the
    # half of the overlap it did not get: finish = unshared finish + overlap / 2
    trace = Trace("short", np.array([0.0, 1e-6]), np.array([100, 100]), np.array([400, 50]))
    first, finish = _log(replace(SETUP, core_sharing=CoreSharing(2, 1.0)), trace)
    base_first, base_finish = _log(SETUP, trace)
    assert first[0] == base_first[0]  # its prefill began before engine 1 was busy
    assert finish[1] - first[1] == pytest.approx(2 * (base_finish[1] - base_first[1]), rel=0.01)
    # within two steps (~22 ms): the granularity of a stretch
    assert finish[0] == pytest.approx(base_finish[0] + (finish[1] - 1e-6) / 2, abs=0.025)


def test_running_streams_stretch_steps_and_a_finished_one_releases_them() -> None:
    # 8 alike requests at once on 2 engines, per_stream 0.05: while all 8 run,
    # every step is 1.4x; the same pair alone (2 streams) only 1.1x
    eight = Trace("eight", np.arange(8) * 1e-6, np.full(8, 100), np.full(8, 200))
    base = _tpot(SETUP, eight)
    streamed = _tpot(replace(SETUP, core_sharing=CoreSharing(1, 0.0, 0.05)), eight)
    np.testing.assert_allclose(streamed / base, 1.4, rtol=0.02)
    pair = _pair()
    np.testing.assert_allclose(
        _tpot(replace(SETUP, core_sharing=CoreSharing(1, 0.0, 0.05)), pair) / _tpot(SETUP, pair),
        1.1, rtol=0.02,
    )  # fmt: skip
    # a long request next to a short one: once the short one ends, the long
    # one's steps go back to 1 + per_stream (its run is cut at the completion)
    trace = Trace("short", np.array([0.0, 1e-6]), np.array([100, 100]), np.array([400, 50]))
    _, finish = _log(replace(SETUP, core_sharing=CoreSharing(1, 0.0, 0.5)), trace)
    _, base_finish = _log(SETUP, trace)
    # work W = base_finish[0] (arrival 0); overlap O at 2x does O/2 of it, the
    # rest at 1.5x: finish = O + 1.5 (W - O/2) = 1.5 W + O/4 (within two steps)
    overlap = finish[1] - 1e-6
    assert finish[0] == pytest.approx(1.5 * base_finish[0] + overlap / 4, abs=0.025)


# ---- the calibration ---------------------------------------------------------------
STEP, ALPHA, OVERHEAD = 0.005, 0.3, 0.04


@pytest.fixture(scope="module")
def fidelity_setup() -> tuple[SimSetup, object]:
    cfg = load_config(DEFAULT_CONFIG)
    setup, _ = sim_setup(cfg, _engine_kwargs(cfg), PROFILE, num_blocks=20000)
    return setup, cfg


def _probes(real: Path, setup: SimSetup, cfg: object) -> tuple[object, object]:
    """One-at-a-time and two-at-a-time probes, "measured" on ``setup``."""
    arr, prompts, outs = np.arange(10) * 5.0, np.arange(10) * 30 + 20, np.full(10, 64)
    one = write_real(real / "probe.json", setup, cfg, arr, prompts, outs, OVERHEAD)
    arr2 = np.repeat(np.arange(10) * 5.0, 2) + np.tile([0.0, 0.01], 10)
    two = write_real(real / "probe-c2.json", setup, cfg, arr2, np.full(20, 120),
                     np.full(20, 96), OVERHEAD)  # fmt: skip
    return one, two


def test_each_term_is_recovered_from_its_probe(
    tmp_path: Path, fidelity_setup: tuple[SimSetup, object]
) -> None:
    base, cfg = fidelity_setup
    truth = with_serving_costs(base, step_overhead_s=STEP, sharing=CoreSharing(2, ALPHA))
    one, two = _probes(tmp_path, truth, cfg)
    # 1. per-step overhead from TPOT at concurrency 1 (tolerance 0.1 ms: the
    # router may pick the other replica, whose noise draws differ by ~0.1 %)
    step = step_overhead(base, one, cfg)
    assert step == pytest.approx(STEP, abs=1e-4)
    # 2. the sharing factor from TPOT two at a time (bisection tolerance 1e-3,
    # plus the step's own error)
    with_step = with_serving_costs(base, step_overhead_s=step)
    alpha, note = fit_contention(with_step, two, cfg, engines_per_group=2)
    assert alpha == pytest.approx(ALPHA, abs=0.03) and note == "fitted"
    # 3. the serving overhead from TTFT, with the step overhead in place
    fitted = with_serving_costs(base, step_overhead_s=step, sharing=CoreSharing(2, alpha))
    assert serving_overhead(fitted, one, cfg) == pytest.approx(OVERHEAD, abs=2e-4)
    # without the step overhead, TTFT would carry it: the overhead reads high
    assert serving_overhead(base, one, cfg) > OVERHEAD + 0.5 * STEP
    # a simulator already slower than the probe without contention: alpha 0
    slow = with_serving_costs(base, step_overhead_s=3 * STEP)
    zero, note = fit_contention(slow, two, cfg, engines_per_group=2)
    assert zero == 0.0 and note.startswith("at 0")
    with pytest.raises(ValueError, match="one engine"):
        fit_contention(with_step, two, cfg, engines_per_group=1)


def test_the_stream_cost_is_recovered_from_a_capacity_probe(
    tmp_path: Path, fidelity_setup: tuple[SimSetup, object]
) -> None:
    base, cfg = fidelity_setup
    truth_sharing = CoreSharing(2, ALPHA, per_stream=0.01)
    truth = with_serving_costs(base, step_overhead_s=STEP, sharing=truth_sharing)
    _, two = _probes(tmp_path, truth, cfg)
    arr = np.arange(60) * 1e-3  # 60 at once: 2 x 30 streams
    cap = write_real(tmp_path / "capacity.json", truth, cfg, arr, np.full(60, 120),
                     np.full(60, 96), OVERHEAD)  # fmt: skip
    # started from alpha fitted without streams (too high: the pair's 2 streams
    # were read as contention), the stream cost and then alpha are recovered
    start = with_serving_costs(base, step_overhead_s=STEP, sharing=CoreSharing(2, 0.0))
    alpha0, _ = fit_contention(start, two, cfg, engines_per_group=2)
    assert alpha0 > ALPHA
    setup = with_serving_costs(base, step_overhead_s=STEP, sharing=CoreSharing(2, alpha0))
    per_stream, alpha, source, note = fit_streams(setup, cap, two, cfg, what="capacity probe")
    # bisection tolerance 1e-4 plus alpha's error; alpha within 0.05
    assert per_stream == pytest.approx(0.01, abs=2e-3)
    assert alpha == pytest.approx(ALPHA, abs=0.05)
    assert source.startswith("capacity probe (60 requests): fitted")
    assert "again with per_stream" in note


def test_the_cli_measures_the_terms_and_then_matches_the_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fidelity_setup: tuple[SimSetup, object]
) -> None:
    base, cfg = fidelity_setup
    truth = with_serving_costs(base, step_overhead_s=STEP, sharing=CoreSharing(2, ALPHA))
    real = tmp_path / "real"
    real.mkdir()
    _probes(real, truth, cfg)
    arr, prompts, outs = requests(100, 6.0, seed=3)
    write_real(real / "load-1.json", truth, cfg, arr, prompts, outs, OVERHEAD)
    # the pool with vLLM's own binding (every engine on one core), as stock Ray runs it
    shared = tmp_path / "ab-cpu-shared.yaml"
    shared.write_text(DEFAULT_CONFIG.read_text().replace(", cpu_threads_bind: distinct", ""))
    meta = {"config": str(shared), "profile": str(PROFILE), "loads": [1.0],
            "rates_rps": [6.0], "capacity_rps": 6.0, "num_blocks": 20000}  # fmt: skip
    (real / "meta.json").write_text(json.dumps(meta))
    cli = ["bench", "fidelity", "--real-results", str(real), "--out", str(tmp_path / "o")]
    assert main(cli) == 0
    *rows, summary = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert summary["step_overhead_s"] == pytest.approx(STEP, abs=1e-4)
    assert summary["step_overhead_from"].startswith("probe (10 requests")
    assert summary["contention_alpha"] == pytest.approx(ALPHA, abs=0.03)
    assert summary["contention_from"].startswith("contention probe (20 requests")
    assert summary["engines_per_group"] == 2  # two CPU replicas, one binding
    assert summary["overhead_s"] == pytest.approx(OVERHEAD, abs=2e-4)
    for r in rows:  # measured terms, not the truth: within 2 %, bars held
        for q in (50, 99):
            assert abs(r[f"err_p{q}"]) < 0.02, (r["metric"], q, r[f"err_p{q}"])
    assert summary["all_met"]
    # flags override the probes; zero terms leave the engine alone: TPOT too fast
    assert main([*cli, "--step-overhead-s", "0", "--contention-alpha", "0"]) == 0
    *rows, summary = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert summary["step_overhead_from"] == "--step-overhead-s"
    assert summary["contention_from"] == "--contention-alpha"
    tpot = next(r for r in rows if r["metric"] == "tpot")
    assert tpot["err_p50"] < -0.2
    assert main([*cli, "--step-overhead-s", "-0.001"]) == 2
    assert "--step-overhead-s" in capsys.readouterr().err


# ---- the host model (engines with cores of their own, sharing the host) -----------
def test_host_model_is_the_processor_sharing_balance() -> None:
    host = CoreSharing(2, 0.0, host_cores=2, stream_cost=1.0)
    # x = D / C with D = n e + s k / x: solve by hand, and check the balance
    for busy_others, streams in ((1, 2), (1, 14), (1, 32), (0, 5)):
        x = host.stretch(busy_others, streams)
        demand = (busy_others + 1) * 1.0 + streams * 1.0 / x
        assert x == pytest.approx(max(1.0, demand / 2), rel=1e-12) or x == 1.0
    assert host.stretch(1, 32) == pytest.approx((1 + np.sqrt(1 + 64)) / 2)
    # one engine, one stream on two cores: nothing to share
    assert host.stretch(0, 1) == 1.0
    # concave in the streams: the 30 streams after the first 2 add less than 15x theirs
    assert host.stretch(1, 32) - host.stretch(1, 2) < 15 * (host.stretch(1, 2) - 1.0)
    assert host.active and host.tracks_streams
    assert not CoreSharing(1, 0.0).tracks_streams
    for bad in ({"host_cores": -1}, {"stream_cost": float("nan")}, {"engine_demand": -0.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CoreSharing(2, 0.0, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="replaces alpha and per_stream"):
        CoreSharing(2, 0.3, host_cores=2)


def test_host_model_stretches_simulated_steps_as_it_says() -> None:
    # 8 alike requests at once on 2 engines with 2 cores and k = 0.5: while all
    # 8 run, x = (1 + sqrt(1 + 4 * 0.5 * 8 / 2)) / 2 = (1 + sqrt(9)) / 2 = 2
    eight = Trace("eight", np.arange(8) * 1e-6, np.full(8, 100), np.full(8, 200))
    host = CoreSharing(2, 0.0, host_cores=2, stream_cost=0.5)
    ratio = _tpot(replace(SETUP, core_sharing=host), eight) / _tpot(SETUP, eight)
    np.testing.assert_allclose(ratio, 2.0, rtol=0.02)
    # the same engines on a 16-core host: demand never exceeds the cores
    roomy = replace(host, host_cores=16)
    np.testing.assert_allclose(_tpot(replace(SETUP, core_sharing=roomy), eight),
                               _tpot(SETUP, eight), rtol=1e-9)  # fmt: skip


def test_host_stream_cost_is_recovered_from_a_stream_probe(
    tmp_path: Path, fidelity_setup: tuple[SimSetup, object]
) -> None:
    from experiments.benchmarks.fidelity_calibrate import fit_host_stream_cost

    base, cfg = fidelity_setup
    host = CoreSharing(2, 0.0, host_cores=2, stream_cost=0.8)
    truth = with_serving_costs(base, step_overhead_s=STEP, sharing=host)
    arr = np.arange(60) * 1e-3  # 60 at once: 2 x 30 streams
    cap = write_real(tmp_path / "probe-streams.json", truth, cfg, arr, np.full(60, 120),
                     np.full(60, 96), OVERHEAD)  # fmt: skip
    start = with_serving_costs(base, step_overhead_s=STEP, sharing=replace(host, stream_cost=0.0))
    k, note = fit_host_stream_cost(start, cap, cfg)
    assert k == pytest.approx(0.8, abs=0.02) and note == "fitted"
    # compared only after the opening burst (the steady part): the same truth
    k_steady, _ = fit_host_stream_cost(start, cap, cfg, skip=30)
    assert k_steady == pytest.approx(0.8, abs=0.03)
    with pytest.raises(ValueError, match="skip 60 of a 60-request probe"):
        fit_host_stream_cost(start, cap, cfg, skip=60)
    with pytest.raises(ValueError, match="no host model"):
        fit_host_stream_cost(with_serving_costs(base, step_overhead_s=STEP), cap, cfg)
