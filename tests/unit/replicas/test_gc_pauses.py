"""GC pause watch (replicas.gc_pauses): every collection timed, slow ones logged."""

from __future__ import annotations

import gc
import logging

import pytest

from replicas.gc_pauses import GcPauseWatch


class StepClock:
    """Each read advances by ``step`` seconds: a collection lasts one step."""

    def __init__(self, step: float) -> None:
        self.t = 0.0
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_every_collection_is_counted_by_generation() -> None:
    watch = GcPauseWatch("t", clock=StepClock(0.001)).install()
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        watch.uninstall()
    s = watch.stats()
    assert s["count"][0] >= 1 and s["count"][2] >= 2
    assert s["max_s"][2] == pytest.approx(0.001)
    assert s["total_s"][2] == pytest.approx(0.001 * s["count"][2])
    assert s["slow"] == 0
    before = watch.stats()["count"]
    gc.collect(2)  # uninstalled: no longer counted
    assert watch.stats()["count"] == before


def test_a_collection_longer_than_the_bound_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    watch = GcPauseWatch("ingress", warn_s=0.1, clock=StepClock(0.25)).install()
    try:
        with caplog.at_level(logging.WARNING, logger="cascade.gc"):
            gc.collect(2)
    finally:
        watch.uninstall()
    assert watch.slow >= 1 and watch.stats()["max_s"][2] == pytest.approx(0.25)
    assert any("ingress: gc generation 2 paused the process 0.250 s" in r.message
               for r in caplog.records)  # fmt: skip


def test_install_twice_counts_once_and_bad_bounds_are_refused() -> None:
    watch = GcPauseWatch("t", clock=StepClock(0.001)).install().install()
    try:
        gc.collect(2)
    finally:
        watch.uninstall()
    assert watch._callback not in gc.callbacks
    assert watch.stats()["count"][2] == 1
    with pytest.raises(ValueError, match="warn_s"):
        GcPauseWatch("t", warn_s=0.0)
