"""Routing and admission on the system's outcome (``policies.outcome``, issue 14
§3): the expected number of requests meeting their SLO, this request's
probability plus the change its prefill causes to the requests already there."""

from __future__ import annotations

import numpy as np
import pytest

from policies import build_router, build_view
from policies.admission_outcome import ExpectedSloAdmission
from policies.outcome import ongoing_harm
from policies.scorers.uncertainty import UncertaintyParams, UncertaintyScorer
from policies.slo import SloClass, meet_probability, predict_request
from tests.unit.policies.fakes import request, snap
from uncertainty import CascadeModel

SLO = SloClass(ttft_s=2.0, tpot_s=0.1)


def _twins(running_busy: int = 40, itl: tuple[float, float] = (0.095, 0.004)):  # type: ignore[no-untyped-def]
    """Two replicas alike in everything the request's own prediction reads; "busy"
    runs ``running_busy`` decodes at an ITL just under the 0.1 s TPOT target."""
    return build_view(
        [snap("calm", running=0, itl=itl), snap("busy", running=running_busy, itl=itl)], None, 0.1
    )


def test_equal_own_probability_but_many_decodes_near_their_slo_routes_to_the_other() -> None:
    view = _twins()
    req = request(2000, 128)
    model = CascadeModel()
    own = meet_probability(predict_request(model, view, req, 0.3), SLO, 128)
    assert own[0] == pytest.approx(own[1], abs=1e-12) and own[0] > 0.9
    harm = ongoing_harm(model, view, 2000, 128, SLO.tpot_s)
    assert harm[0] == 0.0 and harm[1] < -0.5  # 40 decodes, ~3 % each pushed over τ
    old = UncertaintyScorer(UncertaintyParams(objective="slo_probability"))
    new = UncertaintyScorer(UncertaintyParams(objective="expected_slo"))
    s_old = old.score(req, view, view.indices)
    s_new = new.score(req, view, view.indices)
    assert s_old[0] == pytest.approx(s_old[1], abs=1e-12)  # the old objective cannot tell
    assert s_new[0] > s_new[1] + 0.3
    router = build_router(
        {"scorers": [{"type": "uncertainty", "params": {"objective": "expected_slo"}}]}
    )
    assert [view.replica_ids[i] for i in router.rank(req, view, np.random.default_rng(0))] == [
        "calm",
        "busy",
    ]


def test_harm_grows_with_the_prompt_and_vanishes_far_from_the_slo() -> None:
    model = CascadeModel()
    near = _twins()
    h = [float(ongoing_harm(model, near, p, 128, 0.1)[1]) for p in (100, 1000, 8000)]
    assert h[0] > h[1] > h[2] and h[0] <= 0.0
    far = _twins(itl=(0.03, 0.004))  # ITL a third of the target: hardly anyone at risk
    assert h[2] / 20 < float(ongoing_harm(model, far, 8000, 128, 0.1)[1]) <= 0.0
    # no TPOT target: no term
    assert not ongoing_harm(model, near, 8000, 128, None).any()
    with pytest.raises(ValueError, match="running_output_tokens"):
        ongoing_harm(model, near, 100, 128, 0.1, running_output_tokens=1.0)


def test_admission_refuses_only_when_the_expected_count_drops() -> None:
    adm = ExpectedSloAdmission()
    adm.set_slos({"default": SLO, "tight": SloClass(ttft_s=0.001, tpot_s=0.1)})
    # a hopeless request (TTFT target 1 ms) on a replica with no one to hurt: G = P ≈ 0,
    # admitting costs nobody anything, so it is admitted
    lone = build_view([snap("r", running=0, itl=(0.095, 0.004))], None, 0.1)
    assert adm.decide(request(2000, 128, slo_class="tight"), lone, 0.1).admit
    # the same request where 40 decodes sit near their TPOT target: G < 0, refused
    crowded = build_view([snap("r", running=40, itl=(0.095, 0.004))], None, 0.1)
    d = adm.decide(request(2000, 128, slo_class="tight"), crowded, 0.1)
    assert not d.admit and d.p_meet is not None and d.p_meet < 0.01
    assert "lowers the expected SLO count" in d.reason
    # a request likely to meet its SLO is worth more than the harm it does to 10
    # such decodes (Δ ≈ −0.3): admitted; to 40 of them (Δ ≈ −1.3) it is not
    some = build_view([snap("r", running=10, itl=(0.095, 0.004))], None, 0.1)
    assert adm.decide(request(2000, 128), some, 0.1).admit
    assert not adm.decide(request(2000, 128), crowded, 0.1).admit
    # over random views: admit exactly when max(P + Δ) >= 0
    rng = np.random.default_rng(5)
    model = adm.model
    for k in range(60):
        snaps = [
            snap(
                f"r{i}",
                running=int(rng.integers(0, 80)),
                waiting=int(rng.integers(0, 4)),
                waiting_prefill_tokens=int(rng.integers(0, 30_000)),
                itl=(float(rng.uniform(0.03, 0.12)), float(rng.uniform(0.001, 0.02))),
            )
            for i in range(4)
        ]
        view = build_view(snaps, None, 0.1)
        req = request(int(rng.integers(100, 8000)), 256, slo_class=("default", "tight")[k % 2])
        slo = adm.params.slos[req.slo_class]
        gain = meet_probability(predict_request(model, view, req, 0.3), slo, 256) + ongoing_harm(
            model, view, req.prompt_tokens, 256, slo.tpot_s
        )
        assert adm.decide(req, view, 0.1).admit == bool(gain.max() >= 0.0), k


def test_the_gateway_feeds_the_learned_mean_length_to_the_outcome_policies() -> None:
    from orchestrator.gateway import Gateway

    router = build_router(
        {"scorers": [{"type": "uncertainty", "params": {"objective": "expected_slo"}}]}
    )
    adm = ExpectedSloAdmission()
    gw = Gateway(router=router, admission=adm)
    scorer = router.scorers[0][0]
    gw.set_snapshots([snap("r0")])
    assert scorer.running_output_tokens == adm.running_output_tokens == 256.0  # no data yet
    for k in range(64):
        gw.predictor.lengths.observe("default", 100, 4096, 80.0 + (k % 2) * 40.0)
    gw.set_snapshots([snap("r0")])
    assert scorer.running_output_tokens == pytest.approx(100.0)
    assert adm.running_output_tokens == pytest.approx(100.0)
