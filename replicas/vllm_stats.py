"""vLLM's scheduler statistics into Cascade's replica telemetry.

Ray's ``VLLMEngine`` builds vLLM's ``AsyncLLM`` without a hook for our own stat
logger, and ``LLMServer`` never sees the scheduler. ``CascadeVLLMEngine`` (passed
as ``engine_cls``) starts ``AsyncLLM`` the way Ray does, adding a
``StatLoggerBase`` that copies every step's ``SchedulerStats`` (running and
waiting requests, KV-cache usage, prefix-cache hits, preemptions) into an
``EngineStatsSink``; ``CascadeLLMServer`` reads the sink into each snapshot.
The loggers run in the ``AsyncLLM`` front-end, i.e. in the replica's process.

vLLM says ``SchedulerStats`` is not a stable interface: the logger reads fields
with defaults, so a renamed field degrades to zeros instead of failing the engine.
"""

from __future__ import annotations

import functools
from typing import Any

from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine

from replicas.recorder import EngineState


class EngineStatsSink:
    """Latest engine counters (single writer: the stat logger; reader: the server)."""

    def __init__(self) -> None:
        self.state = EngineState()
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.preemptions = 0
        self.kv_blocks_total = 1

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        if iteration_stats is not None:
            self.preemptions += int(getattr(iteration_stats, "num_preempted_reqs", 0) or 0)
        if scheduler_stats is None:
            return
        pcs = getattr(scheduler_stats, "prefix_cache_stats", None)
        if pcs is not None:
            self.prefix_queries += int(getattr(pcs, "queries", 0) or 0)
            self.prefix_hits += int(getattr(pcs, "hits", 0) or 0)
        usage = float(getattr(scheduler_stats, "kv_cache_usage", 0.0) or 0.0)
        total = max(self.kv_blocks_total, 1)
        self.state = EngineState(
            running=int(getattr(scheduler_stats, "num_running_reqs", 0) or 0),
            waiting=int(getattr(scheduler_stats, "num_waiting_reqs", 0) or 0),
            kv_blocks_used=min(round(usage * total), total),
            kv_blocks_total=total,
            prefix_hit_rate=self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0,
            preemptions=self.preemptions,
        )


def _logger_class() -> type:
    from vllm.v1.metrics.loggers import StatLoggerBase

    class CascadeStatLogger(StatLoggerBase):
        def __init__(
            self, vllm_config: Any, engine_index: int = 0, *, sink: EngineStatsSink
        ) -> None:
            self.sink = sink
            cache = getattr(vllm_config, "cache_config", None)
            blocks = getattr(cache, "num_gpu_blocks", None)
            if blocks:
                sink.kv_blocks_total = int(blocks)

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            self.sink.record(scheduler_stats, iteration_stats)

        def log_engine_initialized(self) -> None:
            return None

    return CascadeStatLogger


class CascadeVLLMEngine(VLLMEngine):
    """Ray's ``VLLMEngine`` with ``stats_sink`` fed by vLLM's scheduler stats."""

    def __init__(self, llm_config: Any) -> None:
        super().__init__(llm_config)
        self.stats_sink = EngineStatsSink()

    def _start_async_llm_engine(
        self, vllm_engine_args: Any, vllm_engine_config: Any, placement_group: Any
    ) -> Any:
        from ray.llm._internal.serve.engines.vllm.vllm_engine import (
            _clear_current_platform_cache,
        )
        from ray.llm._internal.serve.routing_policies.kv_aware.kv_aware_router import (
            is_kv_aware,
        )
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.executor.abstract import Executor

        if is_kv_aware(self.llm_config):  # Ray's own path (token tracking); no stats
            return super()._start_async_llm_engine(
                vllm_engine_args, vllm_engine_config, placement_group
            )
        vllm_engine_config.parallel_config.placement_group = placement_group
        _clear_current_platform_cache()
        loggers: list[Any] = [functools.partial(_logger_class(), sink=self.stats_sink)]
        if self.llm_config.log_engine_metrics:
            from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

            loggers.append(RayPrometheusStatLogger)
        return AsyncLLM(
            vllm_config=vllm_engine_config,
            executor_class=Executor.get_class(vllm_engine_config),
            log_requests=vllm_engine_args.enable_log_requests,
            log_stats=True,  # our logger needs the stats even when Ray's are off
            stat_loggers=loggers,
        )
