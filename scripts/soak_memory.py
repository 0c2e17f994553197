"""Memory soak of the pure parts that run inside Cascade's actors, without Ray.

What runs, on one virtual clock (seconds; nothing sleeps):

* 2 pools x 4 simulated replicas: ``EngineModel`` stepped token by token (as
  ``SimEngine`` does on Ray: no fast-forward), each replica's stream timed by a
  ``TelemetryRecorder`` (the deployment's ``_timed``), its snapshot pushed at 4 Hz;
* the controller core (``Controller``): a step at 4 Hz with those snapshots,
  ``report_arrivals`` and ``report_completions`` at 1 Hz (the ingress's report);
* the ingress's ``Gateway``: ``decide`` and ``predict_for`` per request, the
  predictor's ``observe`` per completed stream (as ``Ingress._observe``), synced at 1 Hz;
* one ``RoutingCore`` per pool (the Serve router): ``rank``, ``on_routed``,
  ``on_completed``, synced at 1 Hz.

Requests arrive at ``--rate`` per second (Poisson) with unique ids; a share are
non-streaming (the ingress sees no TTFT: no outcome) and a share are cancelled
mid-stream (the client left: no outcome either). Every ``--churn-s`` one replica
of each pool is replaced by a new one (a new replica id: a restart, a lost node).

tracemalloc (started first) is snapshot after ``--warmup-s`` and at the end; the top growth by
source line is printed, with the sizes of the structures keyed by request or
replica id. Usage::

    PYTHONPATH=. python scripts/soak_memory.py --minutes 20
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from orchestrator.calibration import Outcome
from orchestrator.config import CascadeConfig, parse_config
from orchestrator.contracts import RouterSync
from orchestrator.controller import Controller
from orchestrator.gateway import Gateway
from orchestrator.routing_core import RoutingCore
from replicas.engine_model import EngineConfig, EngineModel
from replicas.perf_model import build_perf_model
from replicas.recorder import TelemetryRecorder
from replicas.sim_request import SimRequest
from replicas.telemetry import RequestInfo

TICK_S = 0.25  # replicas push and the controller steps at 4 Hz
POOLS = {"fast": "H100", "slow": "A100"}


def soak_config() -> CascadeConfig:
    return parse_config(
        {
            "name": "soak",
            "pools": [
                {"name": p, "accelerator": a, "min_replicas": 1, "max_replicas": 8,
                 "initial_replicas": 4}
                for p, a in POOLS.items()
            ],
            "slos": {"classes": [{"name": "default", "ttft_s": 2.0, "tpot_s": 0.1}]},
        }
    )  # fmt: skip


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@dataclass
class _Replica:
    rid: str
    pool: str
    engine: EngineModel
    recorder: TelemetryRecorder
    clock: _Clock
    t: float  # the engine's own time: the end of its last step


@dataclass
class _Flight:
    info: RequestInfo
    pool: str
    replica: str
    arrival_s: float
    streaming: bool
    cancel_after: int | None  # tokens, then the client leaves
    first_token_s: float | None = None
    tokens: int = 0


@dataclass
class Soak:
    """The components and the load (see the module docstring)."""

    rate: float
    churn_s: float
    cancel_share: float = 0.05
    unary_share: float = 0.10
    seed: int = 0
    config: CascadeConfig = field(default_factory=soak_config)

    def __post_init__(self) -> None:
        self.clock = _Clock()
        self.rng = np.random.default_rng(self.seed)
        self.controller = Controller(self.config)
        self.ingress = Gateway.from_config(self.config, rng=self.rng, clock=self.clock)
        self.routers = {
            p: RoutingCore(Gateway.from_config(self.config, rng=self.rng, clock=self.clock),
                           clock=self.clock)
            for p in POOLS
        }  # fmt: skip
        self.replicas: dict[str, _Replica] = {}
        self._ids = itertools.count()
        self._rids = itertools.count()
        self.flights: dict[str, _Flight] = {}
        self.sent = self.completed = 0
        for pool in POOLS:
            for _ in range(4):
                self._add_replica(pool)
        self._next_churn = self.churn_s

    def _add_replica(self, pool: str) -> None:
        rid = f"{pool}-{next(self._rids)}"
        perf = build_perf_model("llama-2-7b", POOLS[pool], 1, None)
        engine = EngineModel(
            rid, pool, perf, EngineConfig(num_blocks=4000), np.random.default_rng(next(self._rids)),
            accelerator=POOLS[pool], collect_tokens=True, fast_forward=False,
        )  # fmt: skip
        clock = _Clock()
        clock.t = self.clock.t
        self.replicas[rid] = _Replica(
            rid, pool, engine, TelemetryRecorder(rid, pool, clock=clock), clock, self.clock.t
        )

    def _churn(self) -> None:
        """One replica of each pool replaced: its requests are cut (as when its
        node goes), its id never comes back."""
        for pool in POOLS:
            victim = min(r for r, rep in self.replicas.items() if rep.pool == pool)
            del self.replicas[victim]
            for req_id, fl in list(self.flights.items()):
                if fl.replica == victim:
                    self._end(req_id, fl, outcome=False)
            self._add_replica(pool)

    # ---- requests --------------------------------------------------------------------
    def _arrive(self, now: float) -> None:
        rid = f"ingress-{next(self._ids)}"
        prompt = int(self.rng.integers(100, 1500))
        info = RequestInfo(request_id=rid, prompt_tokens=prompt, max_tokens=128)
        decision = self.ingress.decide(info)
        if not decision.admission.admit:
            return
        info = decision.request
        self.ingress.predict_for(info, decision.pool)  # logged until its outcome
        router = self.routers[decision.pool]
        ids = [r for r, rep in self.replicas.items() if rep.pool == decision.pool]
        order = router.rank(ids, info, decision.pool)
        replica = self.replicas[ids[order[0]]]
        router.on_routed(replica.rid, info)
        out = int(min(max(self.rng.lognormal(math.log(60), 0.6), 1), info.max_tokens))
        if replica.engine.add_request(info, replica.t, output_tokens=out) is None:
            router.on_completed(replica.rid, info)
            return
        streaming = bool(self.rng.random() >= self.unary_share)
        cancel = (
            int(self.rng.integers(1, out + 1)) if self.rng.random() < self.cancel_share else None
        )
        replica.recorder.on_arrival(rid, prompt, streaming=streaming)
        self.flights[rid] = _Flight(info, decision.pool, replica.rid, now, streaming, cancel)
        self.sent += 1

    def _end(self, req_id: str, fl: _Flight, *, outcome: bool) -> None:
        del self.flights[req_id]
        rep = self.replicas.get(fl.replica)
        if rep is not None:
            rep.recorder.on_finish(req_id)
        self.routers[fl.pool].on_completed(fl.replica, fl.info)
        if outcome and fl.streaming and fl.first_token_s is not None and fl.tokens:
            # Ingress._observe: only a stream with a first token and a length trains
            # the predictor and scores the prediction logged by predict_for
            e2e = self.clock.t - fl.arrival_s
            ttft = fl.first_token_s - fl.arrival_s
            self.ingress.predictor.observe(fl.info, Outcome(ttft, max(e2e, ttft), fl.tokens))
        else:
            self.ingress.predictor.discard(fl.info.request_id)  # the ingress's other exits
        self.completed += outcome

    # ---- time --------------------------------------------------------------------------
    def _run_replica(self, rep: _Replica, until: float) -> None:
        eng = rep.engine
        rep.t = max(rep.t, until - TICK_S)
        while eng.has_work and rep.t < until:
            dur = eng.begin_step(rep.t)
            if dur is None:
                break
            rep.t += dur
            rep.clock.t = rep.t
            finished = {id(r) for r in eng.end_step(rep.t)}
            del eng.log_dur[:], eng.log_decodes[:]  # as SimEngine does
            for r in list(eng.last_emitted):
                self._token(rep, r, finished)

    def _token(self, rep: _Replica, r: SimRequest, finished: set[int]) -> None:
        fl = self.flights.get(r.request_id)
        if fl is None:
            return
        rep.recorder.on_token(r.request_id)
        fl.tokens += 1
        if fl.first_token_s is None:
            fl.first_token_s = rep.t
        if fl.cancel_after is not None and fl.tokens >= fl.cancel_after and id(r) not in finished:
            rep.engine.abort(r.request_id)
            self._end(r.request_id, fl, outcome=False)
        elif id(r) in finished:
            self._end(r.request_id, fl, outcome=True)

    def run(self, seconds: float, on_tick: Callable[[float], None] | None = None) -> None:
        ticks = round(seconds / TICK_S)
        start = self.clock.t
        for k in range(1, ticks + 1):
            now = start + k * TICK_S
            for _ in range(int(self.rng.poisson(self.rate * TICK_S))):
                self._arrive(now - TICK_S)
            for rep in list(self.replicas.values()):
                self._run_replica(rep, now)
            self.clock.t = now
            # what a SimEngine replica pushes (its engine's snapshot), and the
            # deployment's recorder folded at the same rate
            snaps = [rep.engine.snapshot(now) for rep in self.replicas.values()]
            for rep in self.replicas.values():
                rep.clock.t = now
                rep.recorder.snapshot()
            ctl = self.controller
            plan = ctl.step(now, snaps, ctl.traffic.loads(ctl.monitor.mean_output_tokens()))
            if k % 4 == 0:  # 1 Hz: the ingress's report and every process's sync
                counts, period = self.ingress.take_arrivals()
                ctl.report_arrivals(counts, period, now)
                ctl.report_completions(self.ingress.predictor.take_completions())
                state = RouterSync(now, tuple(ctl.latest_snapshots()), plan,
                                   ctl.cascade.to_dict(), ctl.lengths_state())  # fmt: skip
                self.ingress.sync(state)
                for router in self.routers.values():
                    router.sync(state)
            if now >= self._next_churn:
                self._next_churn += self.churn_s
                self._churn()
            if on_tick is not None:
                on_tick(now)

    def sizes(self) -> dict[str, int]:
        """Sizes of the structures keyed by request or replica id."""
        ctl = self.controller
        out = {
            "ingress.predictor.pending": len(self.ingress.predictor.pending),
            "controller.monitor.latest": len(ctl.monitor.latest),
            "controller.monitor.rates": len(ctl.monitor.rates),
            "in flight (the load's own)": len(self.flights),
        }
        for pool, router in self.routers.items():
            out[f"router[{pool}].inflight"] = len(router.inflight)
            out[f"router[{pool}].routed"] = len(router.routed)
            out[f"router[{pool}].gateway.predictor.pending"] = len(router.gateway.predictor.pending)
        for rep in self.replicas.values():
            out[f"recorder[{rep.rid}]._live"] = len(rep.recorder._live)
            out[f"engine[{rep.rid}].log_dur"] = len(rep.engine.log_dur)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="virtual minutes after warm-up")
    ap.add_argument("--warmup-s", type=float, default=120.0)
    ap.add_argument("--rate", type=float, default=20.0, help="requests/s")
    ap.add_argument("--churn-s", type=float, default=300.0, help="replica replaced every")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    # traced from the start: an object made before start() is invisible, and a
    # replica made later would look like growth when it only replaced one
    tracemalloc.start(1)
    t0 = time.perf_counter()
    soak = Soak(rate=args.rate, churn_s=args.churn_s)
    soak.run(args.warmup_s)
    before = tracemalloc.take_snapshot()
    sizes0 = soak.sizes()
    soak.run(args.minutes * 60)
    after = tracemalloc.take_snapshot()
    sizes1 = soak.sizes()
    wall = time.perf_counter() - t0
    print(
        f"virtual {args.warmup_s:.0f} s warm-up + {args.minutes:.0f} min at {args.rate:.0f} "
        f"req/s: {soak.sent} sent, {soak.completed} completed with an outcome; wall {wall:.0f} s"
    )
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(filters).compare_to(before.filter_traces(filters), "lineno")
    total = sum(s.size_diff for s in stats)
    print(f"traced growth after warm-up: {total / 2**20:+.2f} MiB; top {args.top} by line:")
    for s in stats[: args.top]:
        frame = s.traceback[0]
        print(f"  {s.size_diff / 2**10:+10.1f} KiB {s.count_diff:+8d} blocks  "
              f"{frame.filename.split('wt_h2/')[-1]}:{frame.lineno}")  # fmt: skip
    print("structure sizes (after warm-up -> end):")
    for key in sorted(set(sizes0) | set(sizes1)):
        a, b = sizes0.get(key), sizes1.get(key)
        if a != b or "log_dur" not in key:
            print(f"  {key}: {a} -> {b}")


if __name__ == "__main__":
    main()
