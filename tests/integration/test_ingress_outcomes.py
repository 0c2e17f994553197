"""The ingress keeps what Cascade learns from a request off its path: a
finished request only queues its outcome (``CascadeIngress._observe``), and the
background refresh folds the queue (``_fold_outcomes``). No Ray cluster: the
methods run with a stand-in ``self``."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("ray")
from orchestrator.ingress import CascadeIngress


def test_outcomes_are_queued_on_the_path_and_folded_in_the_background() -> None:
    """The fold makes each prediction from the inputs taken at its decision,
    then settles it, oldest first. A full backlog drops the oldest and counts it."""
    settled: list[tuple[Any, ...]] = []
    predicted: list[str] = []

    def predict_from(inputs: str) -> str:
        predicted.append(inputs)
        return f"record-{inputs}"

    me = SimpleNamespace(
        _outcomes=deque(maxlen=3),
        outcomes_dropped=0,
        gateway=SimpleNamespace(predict_from=predict_from),
        _settle=lambda *args: settled.append(args),
    )
    for i in range(4):  # the first is dropped: the backlog holds 3
        CascadeIngress._observe(me, f"req{i}", "llm", 0.1, 1.0, f"in{i}" if i != 2 else None, 7)
    assert me.outcomes_dropped == 1 and predicted == [] and settled == []
    asyncio.run(CascadeIngress._fold_outcomes(me))
    assert predicted == ["in1", "in3"]  # request 2 had no telemetry: no prediction
    assert [s[0] for s in settled] == ["req1", "req2", "req3"]
    assert [s[4] for s in settled] == ["record-in1", None, "record-in3"]
    assert not me._outcomes


def test_a_prediction_that_fails_still_settles_the_outcome() -> None:
    settled: list[tuple[Any, ...]] = []

    def broken(_inputs: object) -> None:
        raise RuntimeError("bad state")

    me = SimpleNamespace(
        _outcomes=deque(maxlen=8),
        outcomes_dropped=0,
        gateway=SimpleNamespace(predict_from=broken),
        _settle=lambda *args: settled.append(args),
    )
    CascadeIngress._observe(me, "req", "llm", 0.1, 1.0, "inputs", 3)
    asyncio.run(CascadeIngress._fold_outcomes(me))
    assert len(settled) == 1 and settled[0][4] is None
