"""The ``tail_protect`` scorer, the snapshot's ``generated_hist`` and its sources."""

from __future__ import annotations

import numpy as np
import pytest

from policies import build_router, build_view
from policies.profiles import PROFILES
from policies.scorers.tail import TailProtectParams, TailProtectScorer, tail_weights
from replicas.recorder import TelemetryRecorder
from replicas.telemetry import GENERATED_EDGES, ReplicaSnapshot, generated_histogram
from tests.unit.policies.fakes import request, snap
from uncertainty.output_length import OutputLengthModel

NB = len(GENERATED_EDGES)


def ranked_ids(router: object, view: object) -> list[str]:
    order = router.rank(request(), view, np.random.default_rng(0))  # type: ignore[attr-defined]
    return [view.replica_ids[i] for i in order]  # type: ignore[attr-defined]


def hist(**buckets: int) -> tuple[int, ...]:
    """A histogram from ``b<edge>=count`` (e.g. ``b0=3, b2048=1``)."""
    out = [0] * NB
    for key, count in buckets.items():
        out[GENERATED_EDGES.index(int(key[1:]))] = count
    return tuple(out)


def test_histogram_buckets_by_lower_edge() -> None:
    h = generated_histogram([0, 15, 16, 31, 32, 5000, 10_000, -3])
    assert h == hist(b0=3, b16=2, b32=1, b4096=1, b8192=1)


def test_snapshot_refuses_malformed_histogram() -> None:
    with pytest.raises(ValueError, match="generated_hist"):
        ReplicaSnapshot("r", "p", 0.0, generated_hist=(1, 2))
    with pytest.raises(ValueError, match="generated_hist"):
        ReplicaSnapshot("r", "p", 0.0, generated_hist=(-1,) + (0,) * (NB - 1))


def test_weights_grow_with_age_and_cap_at_one() -> None:
    w = TailProtectScorer().weights
    assert w.shape == (NB,)
    assert np.all(np.diff(w) >= 0)
    assert w[0] == pytest.approx(0.02)  # a fresh request: P(top 2 %) = 2 %
    assert w[-1] == 1.0  # 8192 tokens: past the prior's 98th percentile
    assert tail_weights(np.array([1.0, 0.04, 0.0]), 0.98) == pytest.approx([0.02, 0.5, 1.0])


def test_learned_lengths_replace_the_prior() -> None:
    model = OutputLengthModel(min_samples=10)
    rng = np.random.default_rng(0)
    for x in rng.integers(1, 100, size=200):  # every length < 100 tokens
        model.observe("default", 100, 4096, float(x))
    scorer = TailProtectScorer()
    prior = scorer.weights.copy()
    scorer.set_output_lengths(model)
    assert scorer.weights[GENERATED_EDGES.index(128)] == 1.0  # past every observed length
    assert prior[GENERATED_EDGES.index(128)] < 0.2
    # an untrained model (fewer than min_samples) keeps the current weights
    fresh = TailProtectScorer()
    fresh.set_output_lengths(OutputLengthModel(min_samples=10))
    assert fresh.weights == pytest.approx(prior)


def test_ranking_avoids_long_running_requests_at_equal_load() -> None:
    """Equal counts everywhere; "old" holds two requests 2,000+ tokens into
    their outputs, the others only fresh ones: a new request avoids "old"."""
    snaps = [
        snap("old", running=4, generated_hist=hist(b0=2, b2048=2)),
        snap("young", running=4, generated_hist=hist(b0=4)),
        snap("mid", running=4, generated_hist=hist(b0=2, b128=2)),
    ]
    router = build_router({"scorers": [{"type": "tail_protect"}]})
    ranked = ranked_ids(router, build_view(snaps, {"old": 4, "young": 4, "mid": 4}))
    assert ranked == ["young", "mid", "old"]


def test_cascade_with_tail_term_breaks_equal_load_ties() -> None:
    snaps = [
        snap("old", running=4, generated_hist=hist(b0=2, b2048=2)),
        snap("young", running=4, generated_hist=hist(b0=4)),
    ]
    spec = {**PROFILES["cascade"]}
    spec["scorers"] = [*spec["scorers"], {"type": "tail_protect", "weight": 0.2}]
    router = build_router(spec)
    view = build_view(snaps, {"old": 4, "young": 4})
    assert ranked_ids(router, view)[0] == "young"
    # ...but it does not outweigh load: "young" with 2 more in flight loses
    view = build_view(snaps, {"old": 4, "young": 6})
    assert ranked_ids(router, view)[0] == "old"


def test_no_histogram_is_neutral() -> None:
    view = build_view([snap("a", running=3), snap("b", running=1)])
    scores = TailProtectScorer(TailProtectParams()).score(request(), view, view.indices)
    assert scores.tolist() == [1.0, 1.0]


def test_recorder_reports_tokens_streamed_so_far() -> None:
    t = [0.0]
    rec = TelemetryRecorder("r", "p", clock=lambda: t[0])
    rec.on_arrival("a", 10)
    rec.on_arrival("b", 10)
    for _ in range(40):
        t[0] += 0.01
        rec.on_token("a")
    assert rec.snapshot().generated_hist == hist(b0=1, b32=1)
