"""build_view: derivations, defaults for missing telemetry, in-flight counts."""

from __future__ import annotations

import numpy as np
import pytest

from policies import ReplicaPrior, build_view
from tests.unit.policies.fakes import snap


def test_arrays_follow_snapshot_order_and_values() -> None:
    v = build_view(
        [
            snap("a", running=3, waiting=1, kv_used=250, time_s=9.0),
            snap("b", pool="a100", accelerator="A100", kv_used=0, time_s=10.0),
        ],
        {"a": 2},
        now_s=10.5,
    )
    assert v.replica_ids == ("a", "b")
    assert v.pools == ("h100", "a100")
    np.testing.assert_allclose(v.kv_usage, [0.25, 0.0])
    np.testing.assert_allclose(v.age_s, [1.5, 0.5])
    np.testing.assert_allclose(v.outstanding, [2, 0])
    np.testing.assert_allclose(v.ongoing, [4, 0])  # max(3 + 1, 2)
    assert v.index_of("b") == 1
    assert v.load.size == 2
    with pytest.raises(ValueError):
        v.kv_usage[0] = 1.0  # read-only


def test_queue_wait_counts_waiting_prefill_work() -> None:
    v = build_view(
        [
            snap("idle"),
            snap("busy", waiting=4, waiting_prefill_tokens=10_000, prefill_s_per_token=1e-4),
        ],
        None,
        0.0,
    )
    # busy: 10k tokens × 0.1 ms = 1 s ahead, plus half a step (ITL 30 ms)
    np.testing.assert_allclose(v.load.queue_wait_mean_s, [0.015, 1.015])
    assert v.load.queue_wait_std_s[1] > v.load.queue_wait_std_s[0]


def test_fresh_replica_gets_documented_defaults() -> None:
    prior = ReplicaPrior()
    v = build_view([snap("new", itl=None, prefill_step=None, prefill_s_per_token=0.0)], None, 0.0)
    load = v.load
    assert load.itl_mean_s[0] == prior.itl_mean_s
    assert load.itl_std_s[0] == 0.0  # unknown → the cascade model alone
    assert load.itl_autocorr[0] == prior.itl_autocorr
    assert load.prefill_s_per_token[0] == prior.prefill_s_per_token
    assert load.prefill_cv[0] == prior.prefill_cv
    assert load.sigma_prefill_s[0] == prior.sigma_prefill_s


def test_per_accelerator_priors() -> None:
    slow = ReplicaPrior(prefill_s_per_token=5e-4, itl_mean_s=0.05)
    v = build_view(
        [
            snap("h", itl=None, prefill_s_per_token=0.0),
            snap("a", accelerator="A100", itl=None, prefill_s_per_token=0.0),
        ],
        None,
        0.0,
        priors={"A100": slow},
    )
    np.testing.assert_allclose(
        v.load.prefill_s_per_token, [ReplicaPrior().prefill_s_per_token, 5e-4]
    )
    np.testing.assert_allclose(v.load.itl_mean_s, [ReplicaPrior().itl_mean_s, 0.05])


def test_unseen_requests_add_queue_wait_and_with_outstanding_matches_rebuild() -> None:
    snaps = [snap("a", running=2), snap("b")]
    base = build_view(snaps, None, 0.0)
    rebuilt = build_view(snaps, {"a": 5, "b": 1}, 0.0)
    refreshed = base.with_outstanding({"a": 5, "b": 1})
    np.testing.assert_allclose(rebuilt.unseen, [3, 1])  # a: 5 sent, 2 in the snapshot
    for v in (rebuilt, refreshed):
        np.testing.assert_allclose(v.load.queue_wait_mean_s, rebuilt.load.queue_wait_mean_s)
    extra = rebuilt.load.queue_wait_mean_s - base.load.queue_wait_mean_s
    np.testing.assert_allclose(extra, np.array([3, 1]) * ReplicaPrior().unseen_prompt_tokens * 1e-4)


def test_take_selects_a_consistent_subview() -> None:
    v = build_view(
        [snap("a", kv_used=100), snap("b", pool="a100", kv_used=200), snap("c", kv_used=300)],
        None,
        0.0,
    )
    sub = v.take(v.pool_indices("h100"))
    assert sub.replica_ids == ("a", "c")
    np.testing.assert_allclose(sub.kv_usage, [0.1, 0.3])
    assert sub.load.size == 2


def test_errors() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        build_view([snap("a"), snap("a")], None, 0.0)
    with pytest.raises(ValueError, match="outstanding"):
        build_view([snap("a")], {"a": -1}, 0.0)


def test_empty_view() -> None:
    v = build_view([], None, 0.0)
    assert v.size == 0 and v.load.size == 0


def test_with_outstanding_refreshes_derived_counts() -> None:
    base = build_view([snap("a", running=1), snap("b")], None, 0.0)
    np.testing.assert_allclose(base.ongoing, [1, 0])  # cached on the base view
    v = base.with_outstanding({"b": 4})
    np.testing.assert_allclose(v.ongoing, [1, 4])
    np.testing.assert_allclose(v.unseen, [0, 4])
    assert v.find("b") == 1 and v.find("zz") is None
    np.testing.assert_allclose(base.ongoing, [1, 0])  # the base is unchanged


def test_with_outstanding_few_in_flight_of_many_replicas() -> None:
    """A router with requests on a few of many replicas (the placed-one-by-one
    path): same view as a rebuild; unknown ids ignored, negative counts refused."""
    snaps = [snap(f"r{i}", running=i % 3) for i in range(12)]
    base = build_view(snaps, None, 0.0)
    inflight = {"r1": 4, "r7": 2, "gone": 9}
    refreshed, rebuilt = base.with_outstanding(inflight), build_view(snaps, inflight, 0.0)
    np.testing.assert_array_equal(refreshed.outstanding, [0, 4, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0])
    np.testing.assert_array_equal(refreshed.unseen, rebuilt.unseen)
    np.testing.assert_allclose(refreshed.load.queue_wait_mean_s, rebuilt.load.queue_wait_mean_s)
    np.testing.assert_allclose(refreshed.load.queue_wait_std_s, rebuilt.load.queue_wait_std_s)
    with pytest.raises(ValueError, match=r"outstanding\['r7'\] = -1"):
        base.with_outstanding({"r7": -1})
