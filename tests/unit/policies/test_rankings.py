"""Table-driven: given replica states, each policy's expected ranking."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from policies import build_router, build_view
from replicas.telemetry import ReplicaSnapshot, RequestInfo
from tests.unit.policies.fakes import request, snap

TIGHT = {"default": {"ttft_s": 1.0, "tpot_s": 0.05}}

# (case id, router spec, snapshots, in-flight counts, request, expected ranking by id)
CASES: list[tuple[str, Any, list[ReplicaSnapshot], dict[str, int], RequestInfo, list[str]]] = [
    (
        "least_outstanding: max(running + waiting, in flight)",
        "least_outstanding",
        [snap("a", running=5), snap("b", running=1), snap("c", running=2, waiting=1), snap("d")],
        {"d": 4},
        request(),
        ["b", "c", "d", "a"],
    ),
    (
        "queue_depth: waiting plus sent-but-unseen",
        "queue_depth",
        [snap("a", waiting=3), snap("b"), snap("c", waiting=1), snap("d", running=1)],
        {"d": 3},  # 2 unseen
        request(),
        ["b", "c", "d", "a"],
    ),
    (
        "kv_usage: emptier cache first",
        "kv_usage",
        [snap("a", kv_used=900), snap("b", kv_used=100), snap("c", kv_used=500)],
        {},
        request(),
        ["b", "c", "a"],
    ),
    (
        "prefix_cache: leading blocks only; load splits ties",
        "prefix_cache",
        [
            snap("a", cached=frozenset({1, 2})),
            snap("b", cached=frozenset({1, 2, 3, 4})),
            snap("c", running=3),
            snap("d", cached=frozenset({2, 3, 4})),  # no block 1: nothing reusable
        ],
        {},
        request(hashes=(1, 2, 3, 4)),
        ["b", "a", "d", "c"],
    ),
    (
        "dynamo_cost: new prefill blocks + active blocks",
        "dynamo_cost",
        # 64-token prompt = 4 blocks. cost a = 0 + 100 + 4, b = 4 + 50 + 4, c = 2 + 10 + 4
        [
            snap("a", kv_used=100, cached=frozenset({1, 2, 3, 4})),
            snap("b", kv_used=50),
            snap("c", kv_used=10, cached=frozenset({1, 2})),
        ],
        {},
        request(64, hashes=(1, 2, 3, 4)),
        ["c", "b", "a"],
    ),
    (
        "uncertainty: queue kills TTFT, noisy decode hurts E2E",
        {"scorers": [{"type": "uncertainty", "params": {"slos": TIGHT}}]},
        [
            snap("queued", waiting=5, waiting_prefill_tokens=20_000),
            snap("noisy", itl=(0.03, 0.06), itl_autocorr=0.9),
            snap("steady"),
        ],
        {},
        request(512, 128),
        ["steady", "noisy", "queued"],
    ),
    (
        "uncertainty: heterogeneous pools, P(SLO) prefers the steady A100",
        {
            "scorers": [
                {
                    "type": "uncertainty",
                    "params": {"slos": {"default": {"ttft_s": 1.0, "tpot_s": 0.03}}},
                }
            ]
        },
        [
            snap("h100", itl=(0.020, 0.030), itl_autocorr=0.8, prefill_s_per_token=5e-5),
            snap("a100", pool="a100", accelerator="A100", itl=(0.028, 0.002), itl_autocorr=0.3),
        ],
        {},
        request(512, 256),
        ["a100", "h100"],
    ),
    (
        "uncertainty mean only (κ = 0): the faster H100",
        {
            "scorers": [
                {"type": "uncertainty", "params": {"objective": "mean_kappa_sigma", "kappa": 0.0}}
            ]
        },
        [
            snap("h100", itl=(0.020, 0.030), itl_autocorr=0.8, prefill_s_per_token=5e-5),
            snap("a100", pool="a100", accelerator="A100", itl=(0.028, 0.002), itl_autocorr=0.3),
        ],
        {},
        request(512, 256),
        ["h100", "a100"],
    ),
    (
        "uncertainty mean + 2σ: the steadier A100",
        {
            "scorers": [
                {"type": "uncertainty", "params": {"objective": "mean_kappa_sigma", "kappa": 2.0}}
            ]
        },
        [
            snap("h100", itl=(0.020, 0.030), itl_autocorr=0.8, prefill_s_per_token=5e-5),
            snap("a100", pool="a100", accelerator="A100", itl=(0.028, 0.002), itl_autocorr=0.3),
        ],
        {},
        request(512, 256),
        ["a100", "h100"],
    ),
    (
        "uncertainty: the cascade, a long prefill disturbs steady-prefill decodes most",
        {"scorers": [{"type": "uncertainty", "params": {"slos": TIGHT}}]},
        [
            # same prefill CV (so the same TTFT); different σ of prefill steps
            snap("steady-prefill", prefill_step=(0.005, 0.001)),
            snap("noisy-prefill", prefill_step=(0.1, 0.02)),
        ],
        {},
        request(4000, 128),
        ["noisy-prefill", "steady-prefill"],
    ),
    (
        "uncertainty: requests sent since the snapshot count (no herding)",
        {"scorers": [{"type": "uncertainty", "params": {"objective": "mean_kappa_sigma"}}]},
        [snap("a"), snap("b")],
        {"a": 6},
        request(),
        ["b", "a"],
    ),
    (
        "cascade profile: KV-full replica filtered out, load decides the rest",
        "cascade",
        [
            snap("full", kv_used=990, cached=frozenset({1, 2, 3})),
            snap("warm", kv_used=300, cached=frozenset({1, 2, 3})),
            snap("cold", kv_used=300),
        ],
        {"warm": 1},
        request(48, hashes=(1, 2, 3)),
        ["cold", "warm"],
    ),
    (
        "cascade profile: a shared prefix does not herd onto the busier replica",
        "cascade",
        # both meet the SLO easily (P ≈ 1); "warm" holds the prefix but has one
        # more request: load balance outranks affinity
        [snap("warm", running=2, cached=frozenset({1, 2, 3})), snap("cold", running=1)],
        {"warm": 2, "cold": 1},
        request(48, hashes=(1, 2, 3)),
        ["cold", "warm"],
    ),
    (
        "least_outstanding in_flight: the router's own count, not the stale snapshot",
        {"scorers": [{"type": "least_outstanding", "params": {"count": "in_flight"}}]},
        # the snapshot still counts 6 requests on "a" that finished since; this
        # router knows 1 in flight there and 2 on "b"
        [snap("a", running=6), snap("b", running=2)],
        {"a": 1, "b": 2},
        request(),
        ["a", "b"],
    ),
    (
        # the profile has no prefix affinity: on vLLM-CPU it decided every count
        # tie for the same replica and piled work on it (policies/profiles.py)
        "cascade profile: a load tie goes to KV headroom, not to the prefix holder",
        "cascade",
        [
            snap("cold", running=1, kv_used=100),
            snap("warm", running=1, kv_used=300, cached=frozenset({1, 2, 3})),
        ],
        {"cold": 1, "warm": 1},
        request(48, hashes=(1, 2, 3)),
        ["cold", "warm"],
    ),
]


@pytest.mark.parametrize(
    ("spec", "snaps", "outstanding", "req", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_ranking(
    spec: Any,
    snaps: list[ReplicaSnapshot],
    outstanding: dict[str, int],
    req: RequestInfo,
    expected: list[str],
) -> None:
    view = build_view(snaps, outstanding, 0.0)
    router = build_router(spec)
    for seed in range(5):  # ties are broken at random; the expected order has none
        ranking = router.rank(req, view, np.random.default_rng(seed))
        assert [view.replica_ids[i] for i in ranking] == expected


def test_round_robin_cycles_in_id_order_and_survives_membership_changes() -> None:
    router = build_router("round_robin")
    rng = np.random.default_rng(0)
    view = build_view([snap("r2"), snap("r0"), snap("r1")], None, 0.0)
    firsts = []
    for _ in range(4):
        rid = view.replica_ids[router.rank(request(), view, rng)[0]]
        router.on_routed(rid, request())
        firsts.append(rid)
    assert firsts == ["r0", "r1", "r2", "r0"]
    # r1 leaves, r3 joins: the cycle continues after the last routed id (r0)
    view = build_view([snap("r0"), snap("r3"), snap("r2")], None, 0.0)
    assert [view.replica_ids[i] for i in router.rank(request(), view, rng)] == ["r2", "r3", "r0"]


def test_round_robin_over_filtered_candidates_keeps_the_cycle() -> None:
    from policies.pickers import RoundRobinPicker

    picker, rng = RoundRobinPicker(), np.random.default_rng(0)
    view = build_view([snap(f"r{i}") for i in (4, 0, 3, 1, 2)], None, 0.0)
    picker.on_routed("r1", request())
    some = np.array([0, 1, 3])  # r4, r0, r1 (a filter dropped r3 and r2)
    assert [view.replica_ids[i] for i in picker.order(np.zeros(3), some, view, rng)] == [
        "r4",
        "r0",
        "r1",
    ]
    every = picker.order(np.zeros(5), view.indices, view, rng)
    assert [view.replica_ids[i] for i in every] == ["r2", "r3", "r4", "r0", "r1"]


def test_round_robin_does_not_advance_without_routing() -> None:
    router = build_router("round_robin")
    view = build_view([snap("a"), snap("b")], None, 0.0)
    rng = np.random.default_rng(0)
    assert router.rank(request(), view, rng) == router.rank(request(), view, rng)


def test_pow2_never_puts_the_most_loaded_first_and_prefers_the_least() -> None:
    router = build_router("pow2")
    view = build_view([snap("idle"), snap("mid", running=5), snap("busy", running=10)], None, 0.0)
    rng = np.random.default_rng(1)
    firsts = [view.replica_ids[router.rank(request(), view, rng)[0]] for _ in range(3000)]
    assert "busy" not in firsts
    # the least loaded wins whenever it is sampled: P = 2/3
    assert abs(firsts.count("idle") / 3000 - 2 / 3) < 0.04


def test_random_is_uniform() -> None:
    router = build_router("random")
    view = build_view([snap(f"r{i}") for i in range(4)], None, 0.0)
    rng = np.random.default_rng(2)
    counts = np.bincount([router.rank(request(), view, rng)[0] for _ in range(4000)], minlength=4)
    assert np.all(np.abs(counts / 4000 - 0.25) < 0.04)


def test_max_score_ranks_best_first_and_shares_only_a_tied_lead() -> None:
    from policies.pickers import MaxScorePicker

    picker, rng = MaxScorePicker(), np.random.default_rng(5)
    view = build_view([snap(f"r{i}") for i in range(4)], None, 0.0)
    scores = np.array([0.2, 0.9, 0.5, 0.7])
    assert picker.order(scores, view.indices, view, rng).tolist() == [1, 3, 2, 0]
    some = np.array([0, 2, 3])  # candidates: the ranking names view indices
    assert picker.order(scores[some], some, view, rng).tolist() == [3, 2, 0]
    tied = np.array([0.9, 0.2, 0.9 - 1e-13, 0.5])  # within 1e-12: a tie
    firsts = [picker.order(tied, view.indices, view, rng).tolist() for _ in range(400)]
    assert {f[0] for f in firsts} == {0, 2} and 120 < sum(f[0] == 0 for f in firsts) < 280
    assert all(f[2:] == [3, 1] for f in firsts)


def test_ties_are_shared_not_piled_on_the_first() -> None:
    router = build_router("kv_usage")
    view = build_view([snap(f"r{i}") for i in range(3)], None, 0.0)
    rng = np.random.default_rng(3)
    counts = np.bincount([router.rank(request(), view, rng)[0] for _ in range(3000)], minlength=3)
    assert counts.min() > 800


def test_prefix_tracker_learns_from_routing() -> None:
    router = build_router("prefix_cache")
    view = build_view([snap("a"), snap("b")], None, 0.0)
    req = request(hashes=(7, 8, 9))
    router.on_routed("b", req)
    assert router.rank(req, view, np.random.default_rng(0))[0] == 1
    scores = router.explain(req, view)["prefix_cache"]
    np.testing.assert_allclose(scores, [0.0, 1.0])


def test_weighted_random_follows_scores() -> None:
    router = build_router({"scorers": [{"type": "kv_usage"}], "picker": "weighted_random"})
    view = build_view(
        [snap("a", kv_used=0), snap("b", kv_used=750), snap("c", kv_used=1000)], None, 0.0
    )
    rng = np.random.default_rng(4)
    firsts = np.bincount([router.rank(request(), view, rng)[0] for _ in range(4000)], minlength=3)
    # scores 1.0, 0.25, 0.0 → first-pick shares 0.8, 0.2, 0
    assert firsts[2] == 0
    assert abs(firsts[0] / 4000 - 0.8) < 0.03


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # (snapshot ITL mean, σ) s: history vs none, noisy vs steady, slow vs fast
        (snap("a", itl=(0.012, 0.008), itl_autocorr=0.6), snap("b", itl=None, prefill_step=None)),
        (snap("a", itl=(0.012, 0.02), itl_autocorr=0.9), snap("b", itl=(0.012, 0.002))),
        (snap("a", itl=(0.025, 0.01)), snap("b", itl=(0.012, 0.004))),
    ],
    ids=["history-vs-none", "noisy-vs-steady", "slow-vs-fast"],
)
def test_cascade_profile_splits_a_burst_when_both_replicas_meet_the_slo(
    a: ReplicaSnapshot, b: ReplicaSnapshot
) -> None:
    """A burst of 8 long streams between two snapshots (no new snapshot in
    between): with P(meet SLO) ~1 on both, the in-flight count decides, so the
    burst splits 4/4 instead of herding onto the replica whose snapshot looks
    better (seen once on Ray: six streams on one replica)."""
    router = build_router("cascade")
    sent = {"a": 0, "b": 0}
    for k in range(8):
        view = build_view([a, b], sent, 0.0)
        best = view.replica_ids[router.rank(request(200, 512), view, np.random.default_rng(k))[0]]
        sent[best] += 1
    assert sent == {"a": 4, "b": 4}
