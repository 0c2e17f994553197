"""round_stats: pooled ratios with a round bootstrap, on synthetic client results
(seeded; tolerances stated per test)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from experiments.benchmarks.ab_rounds import round_rows, round_stats


def _round(
    rng: np.random.Generator, scale: float, n: int = 120, stall: float = 0.0
) -> dict[str, Any]:
    """A client result: lognormal TTFT / E2E times ``scale``; ``stall`` s added
    to a tenth of the requests (a host stall in that round)."""
    ttft = scale * rng.lognormal(np.log(0.07), 0.3, n)
    e2e = scale * rng.lognormal(np.log(0.7), 0.4, n)
    hit = np.arange(n) < n // 10
    ttft[hit] += stall
    e2e[hit] += stall
    return {"ttfts": ttft.tolist(), "latencies": e2e.tolist(), "errors": [""] * n}


def test_a_clearly_faster_system_wins_every_round_with_a_tight_interval() -> None:
    rng = np.random.default_rng(0)
    a = [_round(rng, 0.7) for _ in range(8)]
    b = [_round(rng, 1.0) for _ in range(8)]
    stats = round_stats(a, b, n_boot=500, seed=0)
    for key in ("ttft_p50_s", "e2e_p50_s"):
        s = stats[key]
        assert s["ratio"] == pytest.approx(0.7, abs=0.06)  # 960 lognormals a side
        assert s["ci95"][0] <= s["ratio"] <= s["ci95"][1] < 1.0
        assert s["rounds_lower"] == 8 and s["rounds"] == 8


def test_one_stalled_round_moves_the_pooled_p99_and_widens_its_interval() -> None:
    rng = np.random.default_rng(1)
    a = [_round(rng, 1.0, stall=0.5 if k == 3 else 0.0) for k in range(8)]
    b = [_round(rng, 1.0) for _ in range(8)]
    p99 = round_stats(a, b, n_boot=500, seed=0)["ttft_p99_s"]
    # the stall's 12 requests are the top ~1 %: the pooled P99 is ~4x b's ...
    assert p99["ratio"] > 2.0
    # ... but rounds without it are drawn too: the interval reaches down to ~1
    assert p99["ci95"][0] < 1.3
    assert p99["rounds_lower"] >= 2  # most rounds are not decided by the stall


def test_rows_pair_cascade_with_each_stock_router_and_need_two_rounds() -> None:
    rng = np.random.default_rng(2)
    systems = ("stock-pow2", "stock-prefix", "cascade")
    results = {s: [_round(rng, 1.0) for _ in range(3)] for s in systems}
    rows = round_rows(results, 14.0, seed=0)
    assert [r["round_stats"] for r in rows] == ["cascade/stock-pow2", "cascade/stock-prefix"]
    assert all(r["rate"] == 14.0 and r["ttft_p99_s"]["rounds"] == 3 for r in rows)
    assert round_rows({s: v[:1] for s, v in results.items()}, 14.0, seed=0) == []


def test_unpaired_or_empty_rounds_are_refused() -> None:
    rng = np.random.default_rng(3)
    a = [_round(rng, 1.0) for _ in range(3)]
    with pytest.raises(ValueError, match="paired rounds"):
        round_stats(a, a[:2])
    failed = {"ttfts": [0.1], "latencies": [1.0], "errors": ["boom"]}
    with pytest.raises(ValueError, match=r"system b has no successful request in round\(s\) \[1\]"):
        round_stats(a, [a[0], failed, a[2]])
