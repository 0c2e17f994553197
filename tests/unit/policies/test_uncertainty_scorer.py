"""The uncertainty scorer's fast path (``predict_slo_probability`` and a
tie-break from the predicted mean) scores exactly as its formula on the full
``LatencyPrediction`` does. The prediction itself against its readable
reference: ``tests/unit/uncertainty/test_prediction_fast.py``."""

from __future__ import annotations

import numpy as np
import pytest

from policies import ReplicaView, build_view
from policies.scorers.uncertainty import UncertaintyScorer
from policies.slo import SloClass, meet_probability, predict_request, slo_for
from replicas.telemetry import RequestInfo
from tests.builders import fitted_cascade_model
from tests.unit.policies.fakes import request, snap
from uncertainty import CascadeModel


def _generic_score(
    scorer: UncertaintyScorer, req: RequestInfo, view: ReplicaView, cand: np.ndarray
):  # type: ignore[no-untyped-def]
    """The scorer's formula on the full LatencyPrediction (the pre-fast-path code)."""
    pred = predict_request(scorer.model, view, req, scorer.params.output_cv)
    prob = meet_probability(
        pred, slo_for(scorer.params.slos, req.slo_class), req.expected_output_tokens
    )[cand]
    mean = pred.e2e_mean_s[cand]
    slo = slo_for(scorer.params.slos, req.slo_class)
    target = slo.e2e_target_s(req.expected_output_tokens)
    assert target is not None
    return 0.999 * prob + (1e-3 * target) / (mean + target)


@pytest.mark.parametrize("fitted", [False, True])
def test_uncertainty_scorer_fast_path_equals_generic(fitted: bool) -> None:
    rng = np.random.default_rng(7)
    model = fitted_cascade_model(rng) if fitted else CascadeModel()
    snaps = [
        snap(
            f"r{i}",
            running=int(rng.integers(0, 40)),
            waiting=int(rng.integers(0, 5)),
            waiting_prefill_tokens=int(rng.integers(0, 4000)),
            kv_used=int(rng.integers(0, 1000)),
            itl=None if i % 5 == 0 else (0.02 + 0.01 * rng.random(), 0.005 * rng.random()),
            itl_autocorr=float(rng.uniform(-0.5, 0.9)),
        )
        for i in range(16)
    ]
    base = build_view(snaps, None, 0.1)
    scorer = UncertaintyScorer(model=model)
    scorer.set_slos(
        {"default": SloClass(ttft_s=2.0, tpot_s=0.1), "batch": SloClass(ttft_s=5.0, e2e_s=60.0)}
    )
    all_idx = base.indices
    some = np.array([0, 3, 4, 9, 15])
    for k in range(40):
        view = base.with_outstanding({f"r{k % 16}": k % 9})
        req = request(
            rid=f"q{k}",
            prompt=int(rng.integers(1, 8000)),
            max_tokens=int(rng.choice([1, 64, 512])),
            predicted=None if k % 2 else float(rng.uniform(1, 400)),
            slo_class=("default", "batch", "interactive")[k % 3],
        )
        for cand in (all_idx, some):
            np.testing.assert_array_equal(
                scorer.score(req, view, cand), _generic_score(scorer, req, view, cand)
            )
