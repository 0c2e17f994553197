"""The gateway's prediction log: coverage counted against the issued values,
the naive baseline, the conformal correction; bad outcomes refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.calibration import NAIVE_MIN, Calibrator, Outcome


@pytest.mark.parametrize(
    "kw",
    [
        {"ttft_s": math.nan, "e2e_s": 1.0, "output_tokens": 3},
        {"ttft_s": 0.1, "e2e_s": math.inf, "output_tokens": 3},
        {"ttft_s": -0.1, "e2e_s": 1.0, "output_tokens": 3},
        {"ttft_s": 0.5, "e2e_s": 0.4, "output_tokens": 3},
        {"ttft_s": 0.1, "e2e_s": 1.0, "output_tokens": 0},
    ],
)
def test_bad_outcomes_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Outcome"):
        Outcome(**kw)  # type: ignore[arg-type]


def test_coverage_converges_and_naive_baseline_is_kept() -> None:
    # outcomes ~ lognormal(0, 0.5) for every metric; the model says P50 = P90 =
    # P99 = 1 s (far too narrow): raw coverage is bad, the corrected one holds
    rng = np.random.default_rng(3)
    cal = Calibrator()
    raw = np.ones((3, 3))
    for _ in range(20_000):
        rec = cal.predict("pool", "c", raw, 100.0, 200.0)
        ttft, dec = np.exp(0.5 * rng.standard_normal(2))
        cal.observe(rec, Outcome(float(ttft), float(ttft + dec * 10), 11))
    r = cal.report()
    assert r["coverage_raw"]["ttft"]["p99"] == pytest.approx(0.5, abs=0.02)
    assert r["coverage"]["ttft"]["p90"] == pytest.approx(0.1, abs=0.02)
    assert r["coverage"]["ttft"]["p99"] == pytest.approx(0.01, abs=0.005)
    assert r["coverage_naive"]["ttft"]["p90"] == pytest.approx(0.1, abs=0.02)
    assert r["calibration_n"]["naive"] == 20_000 - NAIVE_MIN
    assert r["length_prediction"]["n"] == 20_000
    assert r["length_prediction"]["mape_p50"] == pytest.approx(89 / 11)


def test_one_token_answers_have_no_tpot() -> None:
    cal = Calibrator()
    cal.observe(cal.predict("p", "c", np.ones((3, 3))), Outcome(0.2, 0.2, 1))
    r = cal.report()
    assert r["coverage"]["tpot"]["p50"] is None and r["coverage"]["ttft"]["p50"] == 0.0
