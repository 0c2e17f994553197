"""``SimLLMEngine``: Ray Serve LLM's engine protocol backed by ``SimEngine``.

``LLMServer(engine_cls=SimLLMEngine)`` serves the OpenAI completions and chat
APIs with no model: prompts are measured (token ids, or ~4 characters per token
of text), the engine model schedules them with realistic batching, KV pressure
and profiled step-time variance, sleeping for each step in real time, and the
response carries one placeholder word per generated token. Large Ray tests run
dozens of such replicas on two cores.

Settings come from ``llm_config.engine_kwargs["cascade_sim"]`` (a plain dict,
written by ``orchestrator.sim_engine_options``): the engine's, read by
``replicas.sim_options.sim_engine_config`` (``perf_model``, ``accelerator``,
``tp``, ``max_num_seqs``, ``max_num_batched_tokens``, ``gpu_memory_utilization``,
``num_blocks``, ``max_model_len``, ``kv_eviction``, and ``prefill_tpot_slo_s`` /
``prefill_min_tokens`` for ``model.prefill_budget: slo_slack``), so it schedules
as the DES simulator's engine does; and ``profile`` (a ``cascade profile`` CSV),
``time_scale`` (sleep multiplier, < 1 runs faster than real time), ``seed``,
``pool``, ``replica_id``.

Requests that can never fit (longer than ``max_model_len``) get an OpenAI error
(HTTP 400) instead of hanging.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np

# An adapter module (imported only where Ray Serve LLM runs): its base class is
# Ray's engine protocol, unconditionally.
from ray.llm._internal.serve.core.engine.protocol import LLMEngine

from replicas.engine_model import EngineModel
from replicas.perf_model import build_perf_model
from replicas.prompts import chat_text, count_prompt_tokens, prefix_block_hashes
from replicas.sim_engine import RequestRejected, SimEngine
from replicas.sim_options import sim_engine_config
from replicas.telemetry import ReplicaSnapshot, RequestInfo


def _serve_replica_id() -> str | None:
    """Serve's id of the replica this engine runs in (snapshots must use it)."""
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # not inside a Serve replica
        return None


# Ray's protocol declares its endpoints as `async def ... -> AsyncGenerator` (coroutines,
# to mypy); LLMServer iterates them as async generators, which is what ours are.
class SimLLMEngine(LLMEngine):
    """See the module docstring."""

    def __init__(self, llm_config: Any) -> None:
        self.llm_config = llm_config
        opts: dict[str, Any] = dict((llm_config.engine_kwargs or {}).get("cascade_sim", {}))
        self.model_id = str(llm_config.model_id)
        self.pool = str(opts.get("pool", "sim"))
        accel = str(opts.get("accelerator", "H100"))
        model = str(opts.get("perf_model", "llama-2-7b"))
        perf = build_perf_model(model, accel, int(opts.get("tp", 1)), opts.get("profile"))
        cfg = sim_engine_config(opts)
        self.max_model_len = cfg.max_model_len
        self.replica_id = str(
            opts.get("replica_id") or _serve_replica_id() or f"{self.pool}-{uuid.uuid4().hex[:8]}"
        )
        rng = np.random.default_rng(int(opts.get("seed", 0)) + (hash(self.replica_id) & 0xFFFF))
        self.engine = SimEngine(
            EngineModel(self.replica_id, self.pool, perf, cfg, rng, accelerator=accel),
            time_scale=float(opts.get("time_scale", 1.0)),
            # wall-clock time: the controller compares snapshot times across processes
            clock=time.time,
        )

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        return None

    async def check_health(self) -> None:
        return None

    def routing_stats(self) -> dict[str, Any]:
        snap = self.engine.snapshot(full=False)
        return {"running": snap.running, "waiting": snap.waiting, "kv_usage": snap.kv_usage}

    def snapshot(self) -> ReplicaSnapshot:
        return self.engine.snapshot(full=True)

    async def resolve_lora(self, lora_model: Any) -> None:
        raise NotImplementedError("SimLLMEngine serves no LoRA adapters")

    # ---- OpenAI endpoints -----------------------------------------------------------------
    async def completions(  # type: ignore[override]
        self, request: Any, raw_request_info: Any = None
    ) -> AsyncGenerator[Any, None]:
        async for item in self._generate(request, request.prompt, chat=False):
            yield item

    async def chat(  # type: ignore[override]
        self, request: Any, raw_request_info: Any = None
    ) -> AsyncGenerator[Any, None]:
        async for item in self._generate(request, chat_text(request.messages), chat=True):
            yield item

    async def _generate(
        self, request: Any, prompt: Any, *, chat: bool
    ) -> AsyncGenerator[Any, None]:
        from ray.serve.llm.openai_api_models import (
            ChatCompletionResponse,
            CompletionResponse,
            ErrorResponse,
        )

        prompt_tokens = count_prompt_tokens(prompt)
        max_tokens = getattr(request, "max_completion_tokens", None) or request.max_tokens or 16
        if max_tokens < 1:
            yield ErrorResponse.model_validate(
                {
                    "error": {
                        "message": f"max_tokens must be >= 1, got {max_tokens}",
                        "type": "BadRequestError",
                        "code": 400,
                    }
                }
            )
            return
        rid = str(getattr(request, "request_id", None) or uuid.uuid4().hex)
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        if self.max_model_len is not None and prompt_tokens + max_tokens > self.max_model_len:
            yield ErrorResponse.model_validate(
                {
                    "error": {
                        "message": f"This model's maximum context length is {self.max_model_len} "
                        f"tokens; the request has {prompt_tokens} prompt tokens and asks for "
                        f"{max_tokens} more.",
                        "type": "BadRequestError",
                        "code": 400,
                    }
                }
            )
            return
        # the same block hashes routers compute (replicas.prompts), so the engine's
        # prefix cache and the blocks it advertises match the routers' view
        info = RequestInfo(
            rid,
            prompt_tokens=prompt_tokens,
            max_tokens=int(max_tokens),
            prefix_hashes=prefix_block_hashes(prompt),
        )
        n = 0
        try:
            async for _timing in self.engine.generate(info, output_tokens=int(max_tokens)):
                n += 1
                if request.stream:
                    delta = {"role": "assistant", "content": " tok"} if chat else None
                    choice: dict[str, Any] = (
                        {"index": 0, "delta": delta, "finish_reason": None}
                        if chat
                        else {"index": 0, "text": " tok", "finish_reason": None}
                    )
                    chunk = {
                        "id": rid,
                        "object": f"{kind}.chunk" if chat else kind,
                        "created": created,
                        "model": self.model_id,
                        "choices": [choice],
                    }
                    yield f"data: {json.dumps(chunk)}\n\n"
        except RequestRejected as exc:
            yield ErrorResponse.model_validate(
                {"error": {"message": str(exc), "type": "BadRequestError", "code": 400}}
            )
            return
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n,
            "total_tokens": prompt_tokens + n,
        }
        if request.stream:
            final = {
                "id": rid,
                "object": f"{kind}.chunk" if chat else kind,
                "created": created,
                "model": self.model_id,
                "choices": [
                    {"index": 0, "delta": {}, "finish_reason": "length"}
                    if chat
                    else {"index": 0, "text": "", "finish_reason": "length"}
                ],
                "usage": usage,
            }
            yield f"data: {json.dumps(final)}\n\n"
            yield "data: [DONE]\n\n"
            return
        text = " tok" * n
        choice_full: dict[str, Any] = (
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length",
            }
            if chat
            else {"index": 0, "text": text, "finish_reason": "length"}
        )
        body = {
            "id": rid,
            "object": kind,
            "created": created,
            "model": self.model_id,
            "choices": [choice_full],
            "usage": usage,
        }
        cls = ChatCompletionResponse if chat else CompletionResponse
        yield cls.model_validate(body)

    # ---- unsupported endpoints: explicit errors, not hangs -------------------------------
    async def _unsupported(self, what: str) -> AsyncGenerator[Any, None]:
        from ray.serve.llm.openai_api_models import ErrorResponse

        yield ErrorResponse.model_validate(
            {
                "error": {
                    "message": f"{what} is not supported by SimLLMEngine",
                    "type": "NotImplemented",
                    "code": 501,
                }
            }
        )

    async def embeddings(  # type: ignore[override]
        self, request: Any, raw_request_info: Any = None
    ) -> AsyncGenerator[Any, None]:
        async for item in self._unsupported("embeddings"):
            yield item

    async def transcriptions(  # type: ignore[override]
        self, request: Any, raw_request_info: Any = None
    ) -> AsyncGenerator[Any, None]:
        async for item in self._unsupported("transcriptions"):
            yield item

    async def score(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        async for item in self._unsupported("score"):
            yield item

    async def tokenize(
        self, request: Any, raw_request_info: Any = None
    ) -> AsyncGenerator[Any, None]:
        async for item in self._unsupported("tokenize"):
            yield item

    async def detokenize(
        self, request: Any, raw_request_info: Any = None
    ) -> AsyncGenerator[Any, None]:
        async for item in self._unsupported("detokenize"):
            yield item

    async def reset_prefix_cache(self) -> None:
        return None

    async def sleep(self, **kwargs: Any) -> None:
        return None

    async def wakeup(self, **kwargs: Any) -> None:
        return None

    async def is_sleeping(self) -> bool:
        return False

    async def pause(self, **kwargs: Any) -> None:
        return None

    async def resume(self, **kwargs: Any) -> None:
        return None

    async def is_paused(self) -> bool:
        return False

    async def collective_rpc(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    async def shutdown(self) -> None:
        return None
