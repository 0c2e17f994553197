"""``SlackPrefillScheduler``: vLLM's scheduler with the per-step prefill budget.

The same policy as the simulator's engine (``replicas.prefill_budget``), plugged
into real vLLM through its scheduler-class setting (``engine_kwargs
scheduler_cls = "replicas.vllm_scheduler.SlackPrefillScheduler"``; Cascade sets it
for ``model.prefill_budget: slo_slack``, see ``replicas.vllm_config``). It runs in
vLLM's EngineCore process, so its one setting, the TPOT target in seconds, comes
in the environment (``CASCADE_PREFILL_TPOT_S``, and ``CASCADE_PREFILL_MIN_TOKENS``);
a missing or bad value fails the engine's start with a message naming it.

How it plugs in: vLLM v1's ``schedule()`` spends one token budget
(``max_num_scheduled_tokens``) on the running requests first (a decode takes one
token), then on prefills. Each step this class lowers that budget to
``decodes + PrefillBudget.budget(slack)`` for the duration of the call, so the
decodes keep their tokens and prefills get at most the policy's chunk. It learns
the step model from ``update_from_output`` (the time between two outputs is a
step; gaps over ``MAX_STEP_S`` are idle time, not steps) and notes each
request's first-token time. It subclasses ``AsyncScheduler`` (vLLM's default),
so async scheduling stays on. Speculative decoding is not accounted for (a
decode is one token).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler

from replicas.prefill_budget import PrefillBudget

ENV_TPOT = "CASCADE_PREFILL_TPOT_S"
ENV_MIN_TOKENS = "CASCADE_PREFILL_MIN_TOKENS"
MAX_STEP_S = 5.0  # a longer gap between outputs is the engine idling


def budget_from_env(max_tokens: int, env: dict[str, str] | os._Environ[str]) -> PrefillBudget:
    """The policy from ``CASCADE_PREFILL_TPOT_S`` / ``CASCADE_PREFILL_MIN_TOKENS``.
    Raises ``ValueError`` naming the variable when it is missing or bad."""
    raw = env.get(ENV_TPOT)
    try:
        tpot = float(raw) if raw is not None else math.nan
    except ValueError:
        tpot = math.nan
    if not (tpot > 0 and math.isfinite(tpot)):
        raise ValueError(f"SlackPrefillScheduler: {ENV_TPOT} must be a TPOT target > 0 s, "
                         f"got {raw!r}")  # fmt: skip
    raw_min = env.get(ENV_MIN_TOKENS, "64")
    try:
        min_tokens = int(raw_min)
    except ValueError:
        raise ValueError(f"SlackPrefillScheduler: {ENV_MIN_TOKENS} must be an integer, "
                         f"got {raw_min!r}") from None  # fmt: skip
    return PrefillBudget(tpot, max_tokens, min_tokens=min(max(min_tokens, 1), max_tokens))


class SlackPrefillScheduler(AsyncScheduler):
    """See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prefill_budget = budget_from_env(int(self.max_num_scheduled_tokens), os.environ)
        self._first_token_s: dict[str, float] = {}
        self._last_output_s: float | None = None
        self.capped_steps = 0  # steps whose budget the policy lowered

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        pb = self.prefill_budget
        now = time.monotonic()
        first = self._first_token_s
        decodes = [
            (int(r.num_output_tokens), first[r.request_id])
            for r in self.running
            if r.request_id in first
        ]
        full = self.max_num_scheduled_tokens
        cap = min(full, len(decodes) + pb.budget(pb.slack_s(decodes, now)))
        if cap < full:
            self.capped_steps += 1
        self.max_num_scheduled_tokens = cap
        try:
            return super().schedule(*args, **kwargs)
        finally:
            self.max_num_scheduled_tokens = full

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        out = super().update_from_output(scheduler_output, model_runner_output)
        now = time.monotonic()
        scheduled: dict[str, int] = dict(scheduler_output.num_scheduled_tokens)
        first = self._first_token_s
        decode_tokens = 0
        for req_id, n in scheduled.items():
            request = self.requests.get(req_id)
            if request is None:
                first.pop(req_id, None)
                continue
            if req_id in first and n == 1:
                decode_tokens += 1
            elif request.num_output_tokens > 0 and req_id not in first:
                first[req_id] = now
        for req_id in [r for r in first if r not in self.requests]:  # finished, aborted
            del first[req_id]
        last, self._last_output_s = self._last_output_s, now
        if last is not None and 0 < now - last < MAX_STEP_S:
            prefill = max(sum(scheduled.values()) - decode_tokens, 0)
            self.prefill_budget.observe(prefill, now - last)
        return out
