"""The E2E floor: equal to the engine model for a lone request, below every policy's
E2E on a noise-free cluster, optimistic prefix cache, and the bar check."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from experiments.e2e_bar import bar_fields, policy_floor_fields
from experiments.e2e_floor import e2e_floor, isolated_e2e_s, optimistic_cached_tokens
from experiments.sim_config import PoolSetup, SimSetup
from experiments.simulator import simulate
from orchestrator.traces import Trace, poisson
from policies.slo import SloClass, SloConfig

# step time (s) = c0 + c1·tokens + c2·prefill_work + c3·decode_seqs + c4·decode_kv
FAST = (4e-3, 2e-5, 2e-10, 1e-4, 2e-8)
SLOW = tuple(2.0 * c for c in FAST)


def _profile(path: Path, coef: tuple[float, ...]) -> str:
    """A ``cascade profile`` CSV whose fit is exactly ``coef`` with zero spread
    (std 0 → cv 0: a noise-free engine, so the floor is exact)."""
    lines = ["prefill_tokens,decode_seqs,kv_len,time_stats.step.mean,time_stats.step.std"]
    for pt in (0, 256, 1024, 4096):
        for ds in (0, 1, 8, 32):
            for kv in (128, 1024, 4096):
                if pt == ds == 0:
                    continue
                t = (coef[0] + coef[1] * (pt + ds) + coef[2] * pt * pt / 2.0 + coef[3] * ds
                     + coef[4] * ds * kv)  # fmt: skip
                lines.append(f"{pt},{ds},{kv},{t * 1e3:.12g},0")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def exact_setup(tmp_path_factory: pytest.TempPathFactory) -> SimSetup:
    """Two noise-free pools, the second twice as slow; chunked prefill at 1,024."""
    d = tmp_path_factory.mktemp("prof")
    kw = {"max_num_seqs": 32, "max_num_batched_tokens": 1024, "num_blocks": 4000}
    return SimSetup(
        pools=(
            PoolSetup("fast", "H100", 2, profile=_profile(d / "f.csv", FAST), **kw),
            PoolSetup("slow", "A100", 2, profile=_profile(d / "s.csv", SLOW), **kw),
        ),
        slos=SloConfig(classes=(SloClass(ttft_s=1.0, tpot_s=0.05),)),
        window_s=20.0,
    )


def _one(prompt: int, output: int, hashes: tuple[tuple[int, ...], ...] = ()) -> Trace:
    n = len(hashes) or 1
    return Trace(
        "t", np.arange(n, dtype=np.float64) * 100.0, np.full(n, prompt, dtype=np.int64),
        np.full(n, output, dtype=np.int64), hashes,
    )  # fmt: skip


def _e2e(setup: SimSetup, trace: Trace, policy: str, seed: int = 0) -> np.ndarray:
    log = simulate(setup, trace, policy, seed=seed).log
    return log.finish_s - log.arrival_s


def test_lone_request_floor_equals_the_noise_free_engine(exact_setup: SimSetup) -> None:
    # 3,000-token prompt: three chunks of 1,024 + one of 952; 200 output tokens
    tr = _one(3000, 200)
    floor = e2e_floor(exact_setup, tr, tr.output_tokens)
    assert floor.pool_names[int(floor.pool[0])] == "fast"
    e2e = _e2e(exact_setup, tr, "least-outstanding")[0]
    assert floor.seconds[0] == pytest.approx(e2e, rel=1e-9)
    # and by hand from the same coefficients: chunks, then 199 decodes of growing KV
    c0, c1, c2, c3, c4 = FAST
    pre = sum(c0 + c1 * c + c2 * c * (k + c / 2) for k, c in
              ((0, 1024), (1024, 1024), (2048, 952)))  # fmt: skip
    dec = sum(c0 + c1 + c3 + c4 * (3001 + j) for j in range(199))
    assert floor.seconds[0] == pytest.approx(pre + dec, rel=1e-6)
    assert floor.ttft_s[0] == pytest.approx(pre, rel=1e-6)
    log = simulate(exact_setup, tr, "least-outstanding").log
    assert log.first_token_s[0] - log.arrival_s[0] == pytest.approx(pre, rel=1e-9)


def test_lone_request_floor_matches_the_noisy_vidur_engine() -> None:
    # the vidur H100 profile draws lognormal noise around the floor's means: over
    # 400 steps it averages out to within 3% (seed 0)
    h100 = PoolSetup("h100", "H100", 1)
    both = SimSetup(pools=(PoolSetup("a100", "A100", 1), h100))
    tr = _one(1000, 400)
    floor = e2e_floor(both, tr, tr.output_tokens)
    assert floor.pool_names[int(floor.pool[0])] == "h100"  # the faster GPU, listed second
    e2e = _e2e(SimSetup(pools=(h100,)), tr, "least-outstanding")[0]
    assert e2e == pytest.approx(floor.seconds[0], rel=0.03)


def test_floor_below_every_policy_on_a_loaded_noise_free_cluster(exact_setup: SimSetup) -> None:
    rng = np.random.default_rng(5)
    base = poisson(300, 1.0, rng)
    tr = base.scaled_to_rate(40.0)  # ~2x what 4 replicas serve without queueing
    out = tr.output_tokens
    floor = e2e_floor(exact_setup, tr, out)
    assert np.all(np.isfinite(floor.seconds))
    for policy in ("pow2", "least_outstanding", "round-robin"):
        res = simulate(exact_setup, tr, policy, seed=2)
        e2e = res.log.finish_s - res.log.arrival_s
        assert np.all(np.isfinite(e2e)), policy
        assert np.all(e2e >= floor.seconds * (1 - 1e-9)), policy
        assert np.median(e2e / floor.seconds) > 1.05, policy  # it queues: not equal
        fields = policy_floor_fields(res.log, floor)
        assert fields["e2e_below_floor"] == 0.0 and fields["e2e_min_floor_ratio"] >= 1 - 1e-9
        # batching slows the tail's decode steps past batch 1's
        assert fields["e2e_tail_tpot_s"] > fields["e2e_tail_floor_tpot_s"] > 0
        assert 0.0 < fields["e2e_tail_ttft_share"] < 1.0
        assert fields["e2e_tail_floor_ratio"] >= 1.0
        assert res.metrics["e2e_p99_s"] >= floor.quantile(0.99)


def test_optimistic_cache_counts_units_other_requests_can_register() -> None:
    unit = 512
    prompts = [2000, 1600, 1024, 600]
    hashes = [(1, 2, 3), (1, 2, 3, 4), (1, 9), (7,)]
    got = optimistic_cached_tokens(prompts, hashes, unit).tolist()
    # r0: units 1, 2, 3 are registrable by r1 (1,600 ≥ 3·512); r1: unit 4 is
    # nobody's (and past its own prompt), units 1-3 are r0's; r2: unit 1 is
    # shared, unit 2 would hold its last token; r3: hash 7 is its own only
    assert got == [1536, 1536, 512, 0]
    assert optimistic_cached_tokens([10, 20], (), unit).tolist() == [0, 0]


def test_prefix_floor_stays_below_the_noise_free_engine(exact_setup: SimSetup) -> None:
    # two requests with the same 3-unit prefix (Mooncake units of 512 tokens):
    # the later one hits the cache in the simulation, and the floor assumed both do
    tr = _one(2000, 50, hashes=((11, 12, 13), (11, 12, 13)))
    floor = e2e_floor(exact_setup, tr, tr.output_tokens)
    assert floor.cached_tokens.tolist() == [1536, 1536]
    e2e = _e2e(exact_setup, tr, "least-outstanding")
    assert np.all(e2e >= floor.seconds * (1 - 1e-9))
    # the first could not hit (nothing was cached yet): the floor was optimistic
    assert e2e[0] > 1.01 * floor.seconds[0]
    assert floor.seconds[1] < e2e[0]  # the cache shortened its prefill


def test_isolated_e2e_refuses_what_the_engine_refuses(exact_setup: SimSetup) -> None:
    pool = exact_setup.pools[0]
    perf, cfg = pool.perf_model(), pool.engine_config()
    assert isolated_e2e_s(perf, cfg, 16 * 4000, 10) == math.inf  # more KV than the cache
    assert isolated_e2e_s(perf, cfg, 0, 10) == math.inf
    with pytest.raises(ValueError, match="cached"):
        isolated_e2e_s(perf, cfg, 100, 10, cached=100)
    tr = _one(16 * 4000, 10)
    floor = e2e_floor(exact_setup, tr, tr.output_tokens)
    assert floor.pool[0] == -1 and math.isnan(floor.quantile(0.99))
    with pytest.raises(ValueError, match="output lengths"):
        e2e_floor(exact_setup, tr, np.zeros(3, dtype=np.int64))


def test_bar_fields_pick_the_best_baseline_and_check_the_floor(exact_setup: SimSetup) -> None:
    tr = _one(1000, 100)
    floor = e2e_floor(exact_setup, tr, tr.output_tokens)
    fp99 = floor.quantile(0.99)
    rows = [
        {"policy": "cascade", "e2e_p99_s": fp99},  # not a baseline: ignored
        {"policy": "pow2", "e2e_p99_s": 2.0 * fp99},
        {"policy": "least-outstanding", "e2e_p99_s": 1.1 * fp99},
        {"policy": "kv_usage", "e2e_p99_s": math.nan},
    ]
    bar = bar_fields(rows, floor)
    assert bar["bar_best_baseline"] == "least_outstanding"
    assert bar["bar_target_e2e_p99_s"] == pytest.approx(0.88 * fp99)
    assert bar["bar_floor_ratio"] == pytest.approx(1 / 1.1)
    assert bar["bar_reachable"] is False  # 0.8 × 1.1 × floor < floor
    bar = bar_fields([{"policy": "pow2", "e2e_p99_s": 2.0 * fp99}], floor)
    assert bar["bar_reachable"] is True
    assert bar_fields([{"policy": "cascade", "e2e_p99_s": 1.0}], floor)["bar_reachable"] is None
