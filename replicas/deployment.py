"""The Serve deployment of one pool's replicas: ``CascadeLLMServer``.

A subclass of Ray Serve LLM's ``LLMServer`` (so the OpenAI API, the engine
lifecycle and Ray's own LLM metrics come from Ray) that adds Cascade's telemetry:

* every streamed chunk of a chat/completions response is timestamped at the
  replica (``TelemetryRecorder.on_token``: one list append on the token path);
* every ``snapshot_period_s`` (~250 ms) a background task builds a
  ``ReplicaSnapshot`` (the engine's own when it has one, e.g. ``SimLLMEngine``;
  else the recorder's) and pushes it to the controller actor, fire-and-forget,
  skipping a period while the previous push is still in flight;
* ``record_routing_stats`` returns the latest snapshot for Serve's router stats;
* with ``first_chunk_immediate`` (the default), a stream's first chunk is sent as
  soon as the engine makes it, the rest batched as Ray does
  (``replicas.stream_batcher``): Ray's batcher holds the first token until the
  end of its first 50 ms interval.
* with ``engine_cores`` > 0 (a CPU pool's ``cpu_threads_bind: distinct``), the
  replica claims that many cores of its host that no other replica holds
  (``replicas.core_claim``) and binds its vLLM-CPU engine to them.

If the controller is missing (not started yet, or gone), pushes are skipped and
retried: serving never depends on the controller. Pushes carry the deployment's
controller secret (``controller_secret``, from ``build_app``); without it the
controller refuses them (counted as push errors here). ``replicas.push`` tells a
missing controller apart from a failed snapshot build or a failed push.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncGenerator
from typing import Any

from ray import serve
from ray.serve.llm import LLMServer

from replicas.gc_pauses import GcPauseWatch
from replicas.loop_lag import LoopLag
from replicas.names import CONTROLLER_NAME, CONTROLLER_NAMESPACE
from replicas.prompts import chat_text, count_prompt_tokens
from replicas.push import SnapshotPusher
from replicas.recorder import TelemetryRecorder
from replicas.stream_batcher import FirstChunkBatcher
from replicas.telemetry import ReplicaSnapshot
from replicas.throttle import Throttle

__all__ = ["CascadeLLMServer"]

logger = logging.getLogger("cascade.replica")


def _request_id(request: Any) -> str:
    rid = getattr(request, "request_id", None)
    return str(rid) if rid else f"req-{id(request)}"


def _prompt_tokens(request: Any) -> int:
    if hasattr(request, "messages"):
        return count_prompt_tokens(chat_text(request.messages))
    return count_prompt_tokens(getattr(request, "prompt", ""))


class CascadeLLMServer(LLMServer):
    """``LLMServer`` + replica telemetry pushed to the Cascade controller."""

    async def __init__(  # type: ignore[misc]
        self,
        llm_config: Any,
        *,
        pool: str,
        accelerator: str = "unknown",
        engine_cls: Any = None,
        telemetry: bool = True,
        snapshot_period_s: float = 0.25,
        controller_name: str = CONTROLLER_NAME,
        controller_namespace: str = CONTROLLER_NAMESPACE,
        controller_secret: str = "",
        first_chunk_immediate: bool = True,
        engine_cores: int = 0,
    ) -> None:
        if engine_cores > 0:
            # before the engine starts: its processes inherit this environment
            # (replicas.core_claim: cores of this host no other replica holds)
            from replicas.core_claim import claim_cores

            self._core_claim = claim_cores(engine_cores)
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = self._core_claim.bind
            logger.info("engine bound to cores %s (slot %d)", self._core_claim.bind,
                        self._core_claim.slot)  # fmt: skip
        try:
            self.replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside Serve (direct tests): a local id
            self.replica_id = f"{pool}-local"
        self.pool = pool
        self.telemetry = telemetry
        self.snapshot_period_s = snapshot_period_s
        self.first_chunk_immediate = first_chunk_immediate
        self._controller_name = controller_name
        self._controller_namespace = controller_namespace
        self._controller_secret = controller_secret  # the controller refuses pushes without
        self._recorder = TelemetryRecorder(
            self.replica_id, pool, accelerator=accelerator, clock=time.time
        )
        self._last: ReplicaSnapshot | None = None
        self._pusher: SnapshotPusher | None = None  # made by the push loop
        from replicas.gpu import GpuSampler

        self._gpu = GpuSampler()  # disabled cleanly without a GPU
        from replicas.metrics_export import ReplicaMetrics

        self._metrics = ReplicaMetrics()
        self._metrics_due = Throttle()  # export at 1 Hz, push at 4 Hz (replicas.throttle)
        self.gc_pauses = GcPauseWatch(f"replica {self.replica_id}").install()
        self.loop_lag = LoopLag(f"replica {self.replica_id}")  # the loop streaming its answers
        await super().__init__(llm_config, engine_cls=engine_cls)
        self._task = asyncio.get_running_loop().create_task(self._push_loop())

    # ---- the token path -----------------------------------------------------------------
    async def _run_request(
        self,
        request: Any,
        *,
        engine_method: str,
        batch_output_stream: bool = False,
        raw_request_info: Any = None,
    ) -> AsyncGenerator[Any, None]:
        await self._maybe_add_request_id_to_request(request)
        await self._maybe_resolve_lora_from_multiplex()
        is_stream = bool(getattr(request, "stream", False))
        stream = getattr(self.engine, engine_method)(request, raw_request_info)
        if self.telemetry and engine_method in ("chat", "completions"):
            stream = self._timed(request, stream, streaming=is_stream)
        if is_stream and batch_output_stream:
            return self._batch_output_stream(stream)
        return stream

    def _batch_output_stream(self, generator: AsyncGenerator[Any, None]) -> Any:
        if not self.first_chunk_immediate:
            return super()._batch_output_stream(generator)
        interval_ms = self._get_batch_interval_ms()  # Ray's setting, Ray's default
        interval_s = None if interval_ms is None else interval_ms / 1000
        return FirstChunkBatcher(generator, interval_s).stream()

    async def _timed(
        self, request: Any, stream: AsyncGenerator[Any, None], *, streaming: bool
    ) -> AsyncGenerator[Any, None]:
        rec = self._recorder
        rid = _request_id(request)
        rec.on_arrival(rid, _prompt_tokens(request), streaming=streaming)
        try:
            async for item in stream:
                if not (isinstance(item, str) and item.startswith("data: [DONE]")):
                    rec.on_token(rid)
                yield item
        finally:
            rec.on_finish(rid)

    # ---- off the token path ---------------------------------------------------------------
    def build_snapshot(self) -> ReplicaSnapshot:
        engine_snapshot = getattr(self.engine, "snapshot", None)
        if callable(engine_snapshot):  # SimLLMEngine: the engine model knows everything
            snap = engine_snapshot()
        else:
            sink = getattr(self.engine, "stats_sink", None)  # CascadeVLLMEngine
            if sink is not None:
                self._recorder.set_engine_state(sink.state)
            snap = self._recorder.snapshot()
        gpu = self._gpu.sample()
        if gpu is not None:
            snap = dataclasses.replace(snap, gpu=gpu)
        self._last = snap
        return snap

    def _lookup_controller(self) -> Any:
        import ray

        # ValueError: no actor of that name (not started yet, or being replaced)
        return ray.get_actor(self._controller_name, namespace=self._controller_namespace)

    async def _push_loop(self) -> None:
        # the push future is an asyncio future around the actor call, so the pusher
        # sees a failed push (e.g. the controller was replaced) without awaiting it
        self._pusher = SnapshotPusher(
            self.build_snapshot,
            self._lookup_controller,
            lambda ctl, snap: asyncio.ensure_future(
                ctl.push.remote([snap], secret=self._controller_secret)
            ),
            on_snapshot=self._export_metrics,
        )
        while True:
            await self.loop_lag.sleep(self.snapshot_period_s)
            if self.telemetry:
                self._pusher.tick()  # never raises; see replicas.push for what fails how

    def _export_metrics(self, snap: ReplicaSnapshot) -> None:
        if self._metrics_due.due():
            self._metrics.export(snap)

    async def cascade_push_stats(self) -> dict[str, Any]:
        """Pushes sent and errors per step and type (tests, debugging)."""
        pusher = self._pusher
        if pusher is None:
            return {"pushes": 0, "errors": {}, "has_controller": False}
        return {
            "pushes": pusher.pushes,
            "errors": dict(pusher.errors),
            "has_controller": pusher.controller is not None,
        }

    async def record_routing_stats(self) -> dict[str, Any]:
        snap = self._last or self.build_snapshot()
        return {
            "running": snap.running,
            "waiting": snap.waiting,
            "kv_usage": snap.kv_usage,
            "time_s": snap.time_s,
        }

    async def cascade_snapshot(self) -> ReplicaSnapshot:
        """The replica's current snapshot (tests, ``cascade status``)."""
        return self.build_snapshot()

    async def __del__(self) -> None:
        task = getattr(self, "_task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await super().__del__()
