"""SimEngine streams tokens in (scaled) real time from the engine model."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from replicas.engine_model import EngineConfig, EngineModel
from replicas.perf_model import ProfiledPerfModel
from replicas.sim_engine import RequestRejected, SimEngine
from replicas.telemetry import Phase, RequestInfo, TokenTiming


def _engine(num_blocks: int = 500) -> SimEngine:
    pm = ProfiledPerfModel.load("llama-2-7b", "h100", 1)
    eng = EngineModel("r0", "p", pm, EngineConfig(num_blocks=num_blocks), np.random.default_rng(0))
    return SimEngine(eng, time_scale=0.05)


def test_concurrent_requests_stream_all_tokens() -> None:
    async def main() -> list[list[TokenTiming]]:
        sim = _engine()

        async def one(i: int) -> list[TokenTiming]:
            info = RequestInfo(f"q{i}", 100 + 10 * i, 64)
            return [t async for t in sim.generate(info, output_tokens=5 + i)]

        out = await asyncio.gather(*(one(i) for i in range(6)))
        snap = sim.snapshot()
        assert snap.completed == 6 and snap.running == 0
        await sim.close()
        return out

    results = asyncio.run(main())
    for i, toks in enumerate(results):
        assert [t.index for t in toks] == list(range(5 + i))
        assert toks[0].phase is Phase.PREFILL and all(t.phase is Phase.DECODE for t in toks[1:])
        assert all(a.t_s <= b.t_s for a, b in itertools.pairwise(toks))


def test_rejected_and_cancelled_requests() -> None:
    async def main() -> None:
        sim = _engine(num_blocks=20)
        with pytest.raises(RequestRejected):
            async for _ in sim.generate(RequestInfo("big", 1000, 10)):
                pass
        gen = sim.generate(RequestInfo("a", 50, 100), output_tokens=100)
        first = await gen.__anext__()
        assert first.index == 0
        await gen.aclose()  # the client went away: the request is aborted
        await asyncio.sleep(0.05)
        assert not sim.engine.has_work and sim.engine.kv_blocks_used == 0
        await sim.close()

    asyncio.run(main())


def test_a_long_lived_sim_replica_keeps_no_per_step_log() -> None:
    """The simulator's per-step log (16 bytes a step, for whole-run metrics)
    grew without bound in a SimEngine replica on Ray; SimEngine drops it each
    step, the engine model keeps it for the simulator."""

    async def main() -> SimEngine:
        sim = _engine()
        for i in range(3):
            async for _ in sim.generate(RequestInfo(f"q{i}", 100, 64), output_tokens=20):
                pass
        await sim.close()
        return sim

    sim = asyncio.run(main())
    assert sim.engine.steps >= 20 and sim.engine.completed == 3
    assert len(sim.engine.log_dur) == len(sim.engine.log_decodes) == 0
    pm = ProfiledPerfModel.load("llama-2-7b", "h100", 1)
    des = EngineModel("r1", "p", pm, EngineConfig(num_blocks=500), np.random.default_rng(0))
    des.add_request(RequestInfo("q", 100, 64), 0.0, output_tokens=20)
    t = 0.0
    while des.has_work:
        dur = des.begin_step(t)
        assert dur is not None
        t += dur
        des.end_step(t)
    assert len(des.log_dur) == des.steps >= 20  # the simulator's engine keeps its log
