"""Per-step prefill token budget from the running decodes' TPOT slack (pure).

vLLM schedules every step with one fixed token budget (``max_num_batched_tokens``):
a long prompt's prefill chunk rides in the same step as every running decode, so
each of them waits for it — prefill variance cascades into their ITL. This
policy sets each step's *prefill* budget (decodes always get their one token)
from how much time the running decodes can still afford:

* **slack** of a decode that has emitted ``n`` tokens, the first at ``t_first``:
  ``s·n − (now − t_first)`` with ``s`` the TPOT SLO — the longest this step may
  take while its TPOT (time after the first token per later token) stays within
  the SLO once this step's token is out. The step's allowance is the smallest
  slack over the running decodes, but at least ``s`` (a decode already behind
  cannot be helped by starving prefills below one SLO's worth of step), times
  ``margin`` (< 1: the step-time model is an estimate);
* **step model** ``d ≈ base + c · prefill_tokens``, learned online from the
  engine's own steps by least squares on exponentially weighted moments (weight
  ``alpha``, plain averages for the first 1/alpha steps), so the same code runs
  on any GPU or on vLLM-CPU without a profile, and learns under a steady stream
  of prefills (a replica that never runs a decode-only step still fits ``base``);
* **budget** ``(allowance − base) / c`` tokens, clipped to
  ``[min_tokens, max_tokens]``: large chunks when decodes have slack, small ones
  when they are close to their SLO, never below ``min_tokens`` so a prefill
  always progresses (TTFT stays bounded: a prompt of P tokens needs at most
  ⌈P / min_tokens⌉ steps). With no decode running, or before the model has
  seen a prefill, the budget is ``max_tokens`` (vLLM's behaviour).

Used by the engine model's scheduler (``replicas.scheduler``) through
``EngineConfig.prefill_tpot_slo_s``, so by the DES simulator and by the Ray tier's
simulated replicas (``SimLLMEngine``) alike, and by vLLM's scheduler subclass
(``replicas.vllm_scheduler``). ``model.prefill_budget`` picks one of
``PREFILL_BUDGETS``. Units: seconds and tokens.
"""

from __future__ import annotations

import math

# model.prefill_budget's values: vLLM's fixed budget, or this policy
PREFILL_BUDGETS: tuple[str, ...] = ("fixed", "slo_slack")
MIN_FIT_STEPS = 8  # steps before the fitted model is used
MIN_FIT_VAR = 1.0  # tokens²: prefill sizes must vary for c to be identified


class PrefillBudget:
    """See the module docstring. Raises ``ValueError`` on a non-positive SLO,
    budgets out of order or ``margin`` outside (0, 1], and on a non-finite or
    negative observation (which would corrupt the step model)."""

    __slots__ = ("_d", "_n", "_p", "_pd", "_pp", "alpha", "margin", "max_tokens", "min_tokens",
                 "tpot_slo_s")  # fmt: skip

    def __init__(
        self,
        tpot_slo_s: float,
        max_tokens: int,
        *,
        min_tokens: int = 64,
        margin: float = 0.8,
        alpha: float = 0.05,
    ) -> None:
        if not (tpot_slo_s > 0 and math.isfinite(tpot_slo_s)):
            raise ValueError(f"prefill budget: tpot_slo_s must be > 0, got {tpot_slo_s!r}")
        if not 1 <= min_tokens <= max_tokens:
            raise ValueError(
                f"prefill budget: need 1 <= min_tokens ({min_tokens}) <= max_tokens ({max_tokens})"
            )
        if not 0 < margin <= 1:
            raise ValueError(f"prefill budget: margin must be in (0, 1], got {margin!r}")
        if not 0 < alpha <= 1:
            raise ValueError(f"prefill budget: alpha must be in (0, 1], got {alpha!r}")
        self.tpot_slo_s = tpot_slo_s
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self.margin = margin
        self.alpha = alpha
        self._n = 0  # steps seen
        # weighted moments of (p = prefill tokens, d = step s): E[p], E[d], E[p²], E[pd]
        self._p = self._d = self._pp = self._pd = 0.0

    @property
    def per_token_s(self) -> float:
        """Fitted extra step time per prefill token (s); nan until identified."""
        var = self._pp - self._p * self._p
        if self._n < MIN_FIT_STEPS or var < MIN_FIT_VAR:
            return math.nan
        c = (self._pd - self._p * self._d) / var
        return c if c > 0 else math.nan

    @property
    def base_s(self) -> float:
        """Fitted step time without prefill (s); nan before the first step."""
        if self._n == 0:
            return math.nan
        c = self.per_token_s
        return self._d - c * self._p if c == c else self._d

    def observe(self, prefill_tokens: int, duration_s: float) -> None:
        """Fold one finished step (its prefill tokens and duration) into the model."""
        if prefill_tokens < 0 or not (duration_s >= 0 and math.isfinite(duration_s)):
            raise ValueError(
                f"prefill budget: bad step ({prefill_tokens} prefill tokens, {duration_s!r} s)"
            )
        self._n += 1
        a = max(self.alpha, 1.0 / self._n)
        p = float(prefill_tokens)
        self._p += a * (p - self._p)
        self._d += a * (duration_s - self._d)
        self._pp += a * (p * p - self._pp)
        self._pd += a * (p * duration_s - self._pd)

    def slack_s(self, decodes: list[tuple[int, float]], now_s: float) -> float:
        """The step allowance (s) for running decodes given as (tokens emitted,
        time of the first); ``inf`` when there are none."""
        s = self.tpot_slo_s
        least = math.inf
        for n, t_first in decodes:
            slack = s * n - (now_s - t_first)
            if slack < least:
                least = slack
        return self.margin * max(least, s) if least < math.inf else math.inf

    def budget(self, allowance_s: float) -> int:
        """Prefill tokens for a step that may take ``allowance_s`` seconds."""
        c, base = self.per_token_s, self.base_s
        if allowance_s == math.inf or c != c or c <= 0:  # no decodes, or no model yet
            return self.max_tokens
        tokens = (allowance_s - base) / c
        if tokens != tokens or tokens <= self.min_tokens:
            return self.min_tokens
        return self.max_tokens if tokens >= self.max_tokens else int(tokens)
