"""Properties over random replica states, for every registered scorer and profile:
scores stay in [0, 1], a filtered-out replica is never ranked, rankings are
permutations of the candidates, and with one replica every policy picks it."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import PROFILES, SCORERS, build_router, build_view
from policies.scorers import PrefixTracker
from policies.view import ReplicaView
from replicas.telemetry import RequestInfo
from tests.unit.policies.fakes import snap

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def replica_states(draw: st.DrawFn, min_size: int = 1, max_size: int = 10) -> ReplicaView:
    n = draw(st.integers(min_size, max_size))
    snaps = []
    outstanding = {}
    for i in range(n):
        total = draw(st.integers(1, 5000))
        history = draw(st.booleans())
        snaps.append(
            snap(
                f"r{i}",
                pool=draw(st.sampled_from(["h100", "a100"])),
                time_s=draw(st.floats(0.0, 10.0)),
                running=draw(st.integers(0, 300)),
                waiting=draw(st.integers(0, 200)),
                waiting_prefill_tokens=draw(st.integers(0, 200_000)),
                kv_used=draw(st.integers(0, total)),
                kv_total=total,
                block_size=draw(st.sampled_from([1, 16, 32])),
                prefill_s_per_token=draw(st.floats(0.0, 1e-2)),
                itl=(draw(st.floats(1e-4, 1.0)), draw(st.floats(0.0, 1.0))) if history else None,
                itl_autocorr=draw(st.floats(-0.99, 0.99)),
                prefill_step=(draw(st.floats(1e-4, 5.0)), draw(st.floats(0.0, 5.0)))
                if history
                else None,
                heterogeneity=draw(st.floats(1.0, 10.0)),
                cached=frozenset(draw(st.sets(st.integers(0, 6), max_size=6))),
            )
        )
        outstanding[f"r{i}"] = draw(st.integers(0, 50))
    return build_view(snaps, outstanding, now_s=10.0)


requests = st.builds(
    lambda p, m, pred, h, c: RequestInfo("q", p, m, pred, tuple(h), c),
    st.integers(0, 100_000),
    st.integers(1, 8192),
    st.none() | st.floats(0.0, 10_000.0),
    st.lists(st.integers(0, 6), max_size=8),
    st.sampled_from(["default", "interactive", "batch"]),
)

SCORER_SPECS = [{"type": name} for name in SCORERS.names()] + [
    {"type": "uncertainty", "params": {"objective": "mean_kappa_sigma", "kappa": 3.0}},
    {"type": "uncertainty", "params": {"objective": "mean_kappa_sigma", "metric": "ttft"}},
]


@SETTINGS
@given(view=replica_states(), req=requests)
def test_every_scorer_scores_in_unit_interval(view: ReplicaView, req: RequestInfo) -> None:
    for spec in SCORER_SPECS:
        router = build_router({"scorers": [spec]})
        scores = router.explain(req, view)[spec["type"]]
        assert scores.shape == (view.size,)
        assert np.all(np.isfinite(scores)), spec
        assert np.all((scores >= 0.0) & (scores <= 1.0)), (spec, scores)


@SETTINGS
@given(view=replica_states(min_size=2), req=requests, seed=st.integers(0, 2**32 - 1))
def test_rankings_are_permutations_and_filtered_replicas_never_appear(
    view: ReplicaView, req: RequestInfo, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    for name, profile in PROFILES.items():
        router = build_router(profile)
        ranking = router.rank(req, view, rng)
        expected = set(router.candidates(req, view).tolist())
        assert sorted(ranking) == sorted(expected), name
        # a strict pool filter: only h100 replicas may appear, never another
        pinned = build_router(
            {**profile, "filters": [{"type": "pool", "params": {"pools": ["h100"]}}]}
        )
        allowed = {i for i, p in enumerate(view.pools) if p == "h100"}
        ranked = pinned.rank(req, view, rng)
        assert set(ranked) == allowed, name


@SETTINGS
@given(view=replica_states(max_size=1), req=requests, seed=st.integers(0, 2**32 - 1))
def test_with_one_replica_every_policy_picks_it(
    view: ReplicaView, req: RequestInfo, seed: int
) -> None:
    for name in PROFILES:
        assert build_router(name).rank(req, view, np.random.default_rng(seed)) == [0], name


@SETTINGS
@given(view=replica_states(), req=requests)
def test_soft_filters_never_empty_the_candidates(view: ReplicaView, req: RequestInfo) -> None:
    router = build_router(
        {
            "filters": [
                {"type": "kv_headroom", "params": {"max_kv_usage": 0.0}},
                {"type": "queue_cap", "params": {"max_waiting": 0}},
                {"type": "fresh", "params": {"max_age_s": 0.001}},
            ],
            "scorers": ["kv_usage"],
        }
    )
    assert len(router.rank(req, view, np.random.default_rng(0))) >= 1


def test_empty_view_ranks_nothing() -> None:
    view = build_view([], None, 0.0)
    for name in PROFILES:
        assert build_router(name).rank(RequestInfo("q", 1, 1), view, np.random.default_rng(0)) == []


def _chain(tokens: list[int]) -> tuple[int, ...]:
    """Chained block hashes, as vLLM's prefix cache keys blocks: block k's hash
    identifies blocks 0..k, so a first block's hash is never a later block's."""
    return tuple(hash(tuple(tokens[: k + 1])) for k in range(len(tokens)))


prompts = st.lists(st.integers(0, 2), max_size=6)


@SETTINGS
@given(
    request_tokens=prompts,
    replicas=st.lists(st.lists(prompts, max_size=3), min_size=1, max_size=8),
    routed=st.lists(st.tuples(st.integers(0, 7), prompts), max_size=8),
    keep=st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_prefix_overlap_equals_brute_force(
    request_tokens: list[int],
    replicas: list[list[list[int]]],
    routed: list[tuple[int, list[int]]],
    keep: list[bool],
) -> None:
    view = build_view(
        [
            snap(f"r{i}", cached=frozenset(h for p in cached for h in _chain(p)))
            for i, cached in enumerate(replicas)
        ],
        None,
        0.0,
    )
    tracker = PrefixTracker(max_blocks=5)  # small: evictions happen
    for r, tokens in routed:
        tracker.record(f"r{r}", _chain(tokens))
    hashes = _chain(request_tokens)
    cands = np.array([i for i in range(view.size) if keep[i]] or [0], dtype=np.intp)
    got = tracker.overlap(RequestInfo("q", 1, 1, prefix_hashes=hashes), view, cands)
    for j, i in enumerate(cands):
        held = set(view.cached_prefixes[i]) | set(tracker._sent.get(view.replica_ids[i], ()))
        k = 0
        while k < len(hashes) and hashes[k] in held:
            k += 1
        assert got[j] == k
