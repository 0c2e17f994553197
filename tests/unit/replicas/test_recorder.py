"""TelemetryRecorder: token timestamps become the right TTFT/ITL/E2E statistics."""

import pytest

from replicas.recorder import EngineState, TelemetryRecorder


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_timestamps_become_latency_statistics() -> None:
    clock = _Clock()
    rec = TelemetryRecorder("r0", "pool-a", clock=clock)
    rec.on_arrival("a", prompt_tokens=100)  # idle replica: TTFT measures prefill
    clock.t += 0.5
    rec.on_token("a")
    for _ in range(10):
        clock.t += 0.02
        rec.on_token("a")
    rec.on_finish("a")
    rec.set_engine_state(EngineState(running=3, kv_blocks_used=40, kv_blocks_total=100))
    snap = rec.snapshot()
    assert snap.time_s == pytest.approx(clock.t)
    assert snap.summaries["ttft"].mean == pytest.approx(0.5)
    assert snap.summaries["itl"].n == 10
    assert snap.summaries["itl"].mean == pytest.approx(0.02)
    assert snap.summaries["e2e"].mean == pytest.approx(0.7)
    assert snap.prefill_s_per_token == pytest.approx(0.5 / 100)
    assert snap.kv_usage == pytest.approx(0.4)
    assert snap.completed == 1
    assert rec.outstanding == 0


def test_unknown_and_aborted_requests_are_not_counted() -> None:
    clock = _Clock()
    rec = TelemetryRecorder("r0", "p", clock=clock)
    rec.on_token("ghost")  # never arrived: ignored
    rec.on_arrival("b", 10)
    rec.on_finish("b")  # no token streamed (aborted): no latency sample
    snap = rec.snapshot()
    assert snap.completed == 0 and "ttft" not in snap.summaries


def test_engine_state_out_of_range_is_clamped_not_raised() -> None:
    rec = TelemetryRecorder("r0", "p", clock=_Clock())
    rec.set_engine_state(EngineState(kv_blocks_used=500, kv_blocks_total=100, prefix_hit_rate=3.0))
    snap = rec.snapshot()
    assert snap.kv_blocks_used == 100 and snap.prefix_hit_rate == 1.0
