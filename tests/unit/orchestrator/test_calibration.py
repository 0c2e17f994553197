"""The gateway's prediction log: coverage counted against the issued values,
the naive baseline, the conformal correction; bad outcomes refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.calibration import NAIVE_MIN, Calibrator, Outcome
from orchestrator.config import load_config
from orchestrator.contracts import RouterSync
from orchestrator.controller import Controller
from orchestrator.gateway import Gateway
from orchestrator.metrics import IngressMetrics, RecordingBackend, observe_prediction
from replicas.telemetry import RequestInfo


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


def test_pinball_loss_ranks_an_informed_predictor_above_the_marginal_one() -> None:
    # y = x * lognormal(0, 0.2) with x known to the model and x ~ U(0.5, 5):
    # the model's exact conditional quantiles have a lower quantile loss than
    # the naive marginal ones, though both are calibrated (seed 5; 20,000
    # outcomes: the loss means differ by > 30 %, their sampling error is ~2 %)
    rng = np.random.default_rng(5)
    cal = Calibrator()
    z = np.array([0.0, 1.2816, 2.3263])  # standard normal quantiles at 0.5, 0.9, 0.99
    for _ in range(20_000):
        x = rng.uniform(0.5, 5.0)
        raw = np.tile(x * np.exp(0.2 * z), (3, 1))
        rec = cal.predict("pool", "c", raw)
        y = float(x * np.exp(0.2 * rng.standard_normal()))
        cal.observe(rec, Outcome(y, y + y, 11))
    r = cal.report()
    for level in ("p50", "p90", "p99"):
        assert r["pinball_s"]["ttft"][level] < 0.7 * r["pinball_naive_s"]["ttft"][level]
    # off by default: nothing issued from the naive side
    assert cal.issued_naive == 0
    assert r["coverage_naive"]["ttft"]["p90"] == pytest.approx(0.1, abs=0.02)
    # by hand (the raw model's, which the correction does not move): P90 at
    # 1.0, y = 2.0 -> 0.9 * 1.0; y = 0.5 -> 0.1 * 0.5
    one = Calibrator()
    for y in (2.0, 0.5):
        one.observe(one.predict("p", "c", np.ones((3, 3))), Outcome(y, y, 2))
    assert one.report()["pinball_raw_s"]["ttft"]["p90"] == pytest.approx((0.9 + 0.05) / 2)


def test_an_informed_model_stays_issued_under_selection() -> None:
    rng = np.random.default_rng(5)
    cal = Calibrator(select=True)
    z = np.array([0.0, 1.2816, 2.3263])
    for _ in range(10_000):
        x = rng.uniform(0.5, 5.0)
        rec = cal.predict("pool", "c", np.tile(x * np.exp(0.2 * z), (3, 1)))
        y = float(x * np.exp(0.2 * rng.standard_normal()))
        cal.observe(rec, Outcome(y, y + y, 11))
    assert cal.issued_naive < 0.05 * 9 * 10_000  # the naive side wins < 5 % of the time


def test_an_uninformative_model_gives_way_to_the_corrected_marginal() -> None:
    # y ~ lognormal(0, 0.5); the model's quantiles carry noise unrelated to y
    # (log-sd 0.8): calibrated after correction, but wider than the marginal.
    # The issued prediction switches to the corrected naive forecaster, whose
    # pinball loss is lower, and stays calibrated (seed 11, 20,000 outcomes;
    # tolerances: miss share +-2 % at P90, loss ratio with > 10 % margin)
    rng = np.random.default_rng(11)
    cal = Calibrator(select=True)
    z = np.array([0.0, 1.2816, 2.3263])
    for _ in range(20_000):
        noise = np.exp(0.8 * rng.standard_normal())
        rec = cal.predict("pool", "c", np.tile(noise * np.exp(0.5 * z), (3, 1)))
        y = float(np.exp(0.5 * rng.standard_normal()))
        cal.observe(rec, Outcome(y, 2 * y, 11))
    r = cal.report()
    assert cal.issued_naive > 0.8 * 9 * 20_000
    assert r["coverage"]["ttft"]["p90"] == pytest.approx(0.1, abs=0.02)
    for level in ("p50", "p90"):
        assert r["pinball_s"]["ttft"][level] < 0.9 * r["pinball_raw_s"]["ttft"][level]


def test_one_token_answers_have_no_tpot() -> None:
    cal = Calibrator()
    cal.observe(cal.predict("p", "c", np.ones((3, 3))), Outcome(0.2, 0.2, 1))
    r = cal.report()
    assert r["coverage"]["tpot"]["p50"] is None and r["coverage"]["ttft"]["p50"] == 0.0


def test_lengths_flow_gateway_to_controller_and_back_over_a_sync() -> None:
    # what the simulator's stack and the Ray ingress both do: completions train
    # the gateway's model and its delta; the controller merges deltas and every
    # gateway (ingress or router) reloads the merged model from a RouterSync
    cfg = load_config()
    ctl = Controller(cfg)
    ingress, router = Gateway.from_config(cfg), Gateway.from_config(cfg)
    rng = np.random.default_rng(0)
    for i in range(200):
        info = RequestInfo(str(i), 500, 4096, slo_class=cfg.slos.default_class)
        n = int(rng.integers(20, 300))
        ingress.on_completed("r", info, Outcome(0.1, 0.1 + 0.02 * n, n))
    ctl.report_completions(ingress.predictor.take_completions())
    assert ingress.predictor.take_completions().n == 0  # a delta is handed over once
    state = ctl.lengths_state()
    assert state is ctl.lengths_state()  # made once per version
    router.sync(RouterSync(time_s=1.0, snapshots=(), plan=None, cascade=None, lengths=state))
    assert router.predictor.lengths.n == 200
    annotated = router.predictor.annotate(RequestInfo("x", 500, 4096, slo_class="default"))
    assert annotated.predicted_output_tokens is not None
    assert 100 < annotated.predicted_output_tokens < 200  # the mean of U(20, 300)


def test_prediction_metrics_count_misses_per_quantile() -> None:
    b = RecordingBackend()
    cal = Calibrator()
    rec = cal.predict("llm-h100", "default", np.array([[1.0, 2.0, 3.0]] * 3))
    observe_prediction(IngressMetrics(b), rec, Outcome(2.5, 2.5, 1), lambda _n, _m, _l: 0.5)
    labels = {"pool": "llm-h100", "class": "default", "metric": "ttft"}
    assert b.value("cascade_predictions_total", **labels) == 1.0
    assert b.value("cascade_prediction_misses_total", quantile="0.9", **labels) == 1.0
    assert b.value("cascade_prediction_misses_total", quantile="0.99", **labels) is None
    assert b.value("cascade_predictions_total", pool="llm-h100", **{"class": "default"},
                   metric="tpot") is None  # fmt: skip
