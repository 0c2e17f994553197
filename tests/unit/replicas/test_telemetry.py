"""Snapshot contracts: re-stamping builds a new snapshot and validates the time."""

from __future__ import annotations

import dataclasses

import pytest

from replicas.telemetry import DecayedStats, ReplicaSnapshot


def test_at_equals_replace_and_leaves_the_original_unchanged() -> None:
    snap = ReplicaSnapshot(
        "r0", "pool", 1.0, running=3, kv_blocks_used=5, kv_blocks_total=10,
        recent={"itl": DecayedStats(0.02, 0.005, 40.0, 0.1)},
    )  # fmt: skip
    later = snap.at(2.5)
    assert later == dataclasses.replace(snap, time_s=2.5)
    assert later is not snap and snap.time_s == 1.0
    with pytest.raises(ValueError, match="time_s"):
        snap.at(float("nan"))
