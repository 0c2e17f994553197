"""``CascadeIngress``: Ray's ``OpenAiIngress`` with Cascade's pool split and admission.

One model may be served by several pool deployments (``llm-h100``, ``llm-a100``).
For each chat/completions request the ingress (``IngressCore``, pure) picks the
pool from the controller's Plan and runs admission; a refused request gets HTTP
429 with a ``Retry-After`` header and an OpenAI-style error body. Everything else
(routes, validation errors as 4xx, streaming, model listing) is Ray's. The Plan
and snapshots come from a background refresh; requests never wait on the
controller. Per-class arrivals are reported to the controller every second (the
optimizer's λ_c).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import math
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    CompletionRequest,
)
from ray.serve.handle import DeploymentHandle
from ray.serve.llm.ingress import OpenAiIngress

from orchestrator.config import parse_config
from orchestrator.ingress_core import IngressCore
from orchestrator.routing_core import request_info_from_body
from policies import build_policies
from replicas.deployment import CONTROLLER_NAME, CONTROLLER_NAMESPACE

_POOL: contextvars.ContextVar[str | None] = contextvars.ContextVar("cascade_pool", default=None)


class CascadeIngress(OpenAiIngress):
    """See the module docstring."""

    def __init__(
        self,
        llm_deployments: dict[str, DeploymentHandle],
        model_cards: dict[str, Any],
        *,
        pool_handles: dict[str, DeploymentHandle],
        config: dict[str, Any],
        lora_paths: dict[str, str] | None = None,
        refresh_s: float = 0.25,
    ) -> None:
        super().__init__(llm_deployments, model_cards, lora_paths=lora_paths)
        cfg = parse_config(config, "ingress config")
        self._cfg = cfg
        self._pool_handles = dict(pool_handles)
        self._pool_stream_handles: dict[str, DeploymentHandle] = {}
        self.core = IngressCore(
            [p.name for p in cfg.pools], build_policies(cfg.policy_config()).admission
        )
        self._refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        self._arrivals: dict[str, list[float]] = {}

    # ---- background: Plan + snapshots in, arrivals out ----------------------------------
    def _ensure_refresh(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        import ray

        controller: Any = None
        last_report = time.time()
        while True:
            try:
                if controller is None:
                    controller = ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
                plan, snaps = await asyncio.gather(
                    controller.get_plan.remote(), controller.get_snapshots.remote()
                )
                self.core.update(plan, snaps)
                now = time.time()
                if now - last_report >= 1.0:
                    counts = {
                        c: (int(v[0]), v[1] / max(v[0], 1), v[2] / max(v[0], 1))
                        for c, v in self._arrivals.items()
                    }
                    self._arrivals = {}
                    await controller.report_arrivals.remote(counts, now - last_report)
                    last_report = now
            except Exception:  # controller missing/restarting: keep the last Plan
                controller = None
            await asyncio.sleep(self._refresh_s)

    # ---- pool choice: the handle Ray's ingress uses for this request --------------------
    def _get_configured_serve_handle(self, model_id: str) -> DeploymentHandle:
        pool = _POOL.get()
        if pool is None or pool not in self._pool_handles:
            return super()._get_configured_serve_handle(model_id)
        handle = self._pool_stream_handles.get(pool)
        if handle is None:
            handle = self._pool_handles[pool].options(stream=True)
            self._pool_stream_handles[pool] = handle
        return handle

    async def _admitted(self, body: Any, call: Any, request: Request) -> Response:
        self._ensure_refresh()
        info = request_info_from_body(body, f"ingress-{next(self._ids)}")
        tally = self._arrivals.setdefault(info.slo_class, [0.0, 0.0, 0.0])
        tally[0] += 1
        tally[1] += info.prompt_tokens
        tally[2] += info.max_tokens
        decision = self.core.decide(info)
        if not decision.admission.admit:
            retry = decision.admission.retry_after_s or 1.0
            return JSONResponse(
                status_code=429,
                headers={"Retry-After": str(max(1, math.ceil(retry)))},
                content={
                    "error": {
                        "message": f"request not admitted: {decision.admission.reason}",
                        "type": "RateLimitError",
                        "code": 429,
                    }
                },
            )
        token = _POOL.set(decision.pool)
        try:
            # the pool's handle is taken before the first chunk is returned, so
            # the context variable is still set when Ray's ingress asks for it
            return await call(body, request)
        finally:
            _POOL.reset(token)

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        return await self._admitted(body, super().completions, request)

    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        return await self._admitted(body, super().chat, request)
