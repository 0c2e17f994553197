"""Uncertainty backpressure: decode ITL σ → the pool's prefill admission budget.

Why: a prefill chunk in a mixed batch stretches every running decode step, so
admitting prefills faster than a pool can absorb shows up first as a rising
inter-token-latency σ (the cascade), before means or queues move. The
controller watches σ per pool and shrinks the token budget given to new
prefills when σ is too high, restoring it as σ falls.

Control law (derivation, gain rule and convergence argument: docs/backpressure.md).
Per pool, the state is x = log(B / B_max), B the prefill budget in tokens/s:

    σ_eff = max(σ + h·g, 0)              g = dσ/dt (given, or finite difference)
    σ_eff > σ_high:  x ← x − k_dec·dt·min(log(σ_eff/σ_high), e_max)      (decrease)
    σ_eff < σ_low:   x ← x + k_inc·dt·min(log(σ_low/σ_eff),  e_max)      (restore)
    otherwise:       hold                                               (hysteresis band)
    x ∈ [log f_min, 0]

An integral law on log B with a lead term h·g that cancels the lag of the σ
estimator, a dead band [σ_low, σ_high] and clamping (anti-windup). On entering a
decrease, B first snaps down to the admitted rate × (1 + margin) when the
admitted rate is known ("bumpless"), so the loop does not spend seconds
integrating down through a budget that was not binding.

``saturation`` = σ_eff / σ_high: ≥ 1 means hold new prefills beyond the budget.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from policies.params import PolicyParams
from policies.registry import BACKPRESSURES

Action = Literal["decrease", "hold", "increase"]


@dataclass(frozen=True, slots=True)
class BackpressureState:
    """Backpressure read-out of one pool at ``time_s``.

    ``prefill_token_budget``: prompt tokens per second the pool may take in new
    prefills (enforce with ``TokenBucket`` / the ``token_budget`` admission).
    ``budget_fraction`` = budget / the pool's maximum, in [min_fraction, 1].
    ``saturation`` = σ_eff / σ_high; ≥ 1 means hold.
    """

    pool: str
    time_s: float
    saturation: float
    prefill_token_budget: int
    budget_fraction: float
    sigma_eff_s: float
    action: Action

    @property
    def hold(self) -> bool:
        return self.saturation >= 1.0


class Backpressure(ABC):
    """One pool-level backpressure controller per deployment."""

    Params: ClassVar[type[PolicyParams]] = PolicyParams
    type_name: ClassVar[str] = ""

    @classmethod
    def from_params(cls, params: Any) -> Self:
        return cls()

    @abstractmethod
    def update(
        self,
        pool: str,
        now_s: float,
        itl_sigma_s: float,
        itl_sigma_growth: float | None = None,
        admitted_prefill_tokens_per_s: float | None = None,
    ) -> BackpressureState:
        """Fold one measurement of ``pool``'s decode ITL σ (s) at ``now_s`` and
        return the new state. ``itl_sigma_growth`` is dσ/dt (s/s) if known."""

    @abstractmethod
    def state(self, pool: str) -> BackpressureState | None:
        """The latest state of ``pool``; None before its first update."""


class NoBackpressureParams(PolicyParams):
    max_prefill_tokens_per_s: int = Field(default=1_000_000_000, ge=1)


@BACKPRESSURES.register("none")
class NoBackpressure(Backpressure):
    """Never limits prefill (saturation 0, full budget): the baselines' setting.

    YAML: ``backpressure: {type: none}``
    """

    Params = NoBackpressureParams

    def __init__(self, max_prefill_tokens_per_s: int = 1_000_000_000) -> None:
        self.max_budget = max_prefill_tokens_per_s
        self._states: dict[str, BackpressureState] = {}

    @classmethod
    def from_params(cls, params: NoBackpressureParams) -> NoBackpressure:
        return cls(params.max_prefill_tokens_per_s)

    def update(
        self,
        pool: str,
        now_s: float,
        itl_sigma_s: float,
        itl_sigma_growth: float | None = None,
        admitted_prefill_tokens_per_s: float | None = None,
    ) -> BackpressureState:
        st = BackpressureState(pool, now_s, 0.0, self.max_budget, 1.0, itl_sigma_s, "hold")
        self._states[pool] = st
        return st

    def state(self, pool: str) -> BackpressureState | None:
        return self._states.get(pool)


class UncertaintyBackpressureParams(PolicyParams):
    sigma_high_s: float = Field(default=0.02, gt=0.0)
    sigma_low_s: float = Field(default=0.015, gt=0.0)
    max_prefill_tokens_per_s: int = Field(default=100_000, ge=1)
    pool_max_prefill_tokens_per_s: dict[str, int] = Field(default_factory=dict)
    min_fraction: float = Field(default=0.05, gt=0.0, le=1.0)
    decrease_gain_per_s: float = Field(default=0.5, gt=0.0)
    increase_gain_per_s: float = Field(default=0.5, gt=0.0)
    lookahead_s: float = Field(default=0.5, ge=0.0)
    growth_tau_s: float = Field(default=1.0, ge=0.0)
    max_log_error: float = Field(default=1.0, gt=0.0)
    snap_margin: float = Field(default=0.1, ge=0.0)
    max_dt_s: float = Field(default=2.0, gt=0.0)

    @model_validator(mode="after")
    def _band(self) -> UncertaintyBackpressureParams:
        if not self.sigma_low_s < self.sigma_high_s:
            raise ValueError(
                f"sigma_low_s ({self.sigma_low_s}) must be < sigma_high_s ({self.sigma_high_s})"
            )
        for pool, b in self.pool_max_prefill_tokens_per_s.items():
            if b < 1:
                raise ValueError(f"pool_max_prefill_tokens_per_s[{pool!r}] = {b}: must be >= 1")
        return self


@dataclass(slots=True)
class _PoolLoop:
    x: float = 0.0  # log(B / B_max)
    last_t: float | None = None
    last_sigma: float | None = None
    growth: float = 0.0  # filtered dσ/dt (s/s)
    action: Action = "hold"


@BACKPRESSURES.register("uncertainty")
class UncertaintyBackpressure(Backpressure):
    """Per-pool integral control of the prefill budget on decode ITL σ (module
    docstring; docs/backpressure.md for the gain rule and the step response).

    YAML::

        backpressure:
          type: uncertainty
          params:
            sigma_high_s: 0.020          # reduce prefill admission above this σ_ITL
            sigma_low_s: 0.015           # restore below this (hysteresis band)
            max_prefill_tokens_per_s: 100000
            pool_max_prefill_tokens_per_s: {h100: 200000}
            min_fraction: 0.05           # never below 5 % of the maximum
            decrease_gain_per_s: 1.0     # k_dec
            increase_gain_per_s: 0.5     # k_inc
            lookahead_s: 1.0             # h: lead on σ growth (≈ the σ estimator's lag)

    Inputs are validated: a negative or non-finite σ, or time going backwards
    for a pool, raise ``ValueError`` and change nothing.
    """

    Params = UncertaintyBackpressureParams

    def __init__(self, params: UncertaintyBackpressureParams | None = None) -> None:
        self.params = params or UncertaintyBackpressureParams()
        self._loops: dict[str, _PoolLoop] = {}
        self._states: dict[str, BackpressureState] = {}
        self._x_min = math.log(self.params.min_fraction)

    @classmethod
    def from_params(cls, params: UncertaintyBackpressureParams) -> UncertaintyBackpressure:
        return cls(params)

    def max_budget(self, pool: str) -> int:
        p = self.params
        return p.pool_max_prefill_tokens_per_s.get(pool, p.max_prefill_tokens_per_s)

    def update(
        self,
        pool: str,
        now_s: float,
        itl_sigma_s: float,
        itl_sigma_growth: float | None = None,
        admitted_prefill_tokens_per_s: float | None = None,
    ) -> BackpressureState:
        p = self.params
        if not (math.isfinite(itl_sigma_s) and itl_sigma_s >= 0):
            raise ValueError(f"pool {pool!r}: itl_sigma_s={itl_sigma_s!r} must be finite and >= 0")
        if itl_sigma_growth is not None and not math.isfinite(itl_sigma_growth):
            raise ValueError(f"pool {pool!r}: itl_sigma_growth must be finite")
        loop = self._loops.get(pool) or _PoolLoop()
        if loop.last_t is not None and now_s < loop.last_t:
            raise ValueError(f"pool {pool!r}: now_s={now_s} is earlier than the last update")
        dt = 0.0 if loop.last_t is None else min(now_s - loop.last_t, p.max_dt_s)
        if itl_sigma_growth is None:
            # finite difference of the σ estimate, low-pass filtered (a raw
            # difference of a noisy estimate is mostly noise); the lead h·g then
            # reconstructs the σ the estimator is lagging towards (docs/backpressure.md)
            if dt > 0 and loop.last_sigma is not None:
                raw = (itl_sigma_s - loop.last_sigma) / dt
                w = 1.0 - math.exp(-dt / p.growth_tau_s) if p.growth_tau_s > 0 else 1.0
                loop.growth += w * (raw - loop.growth)
            itl_sigma_growth = loop.growth
        sigma_eff = max(itl_sigma_s + p.lookahead_s * itl_sigma_growth, 0.0)

        b_max = self.max_budget(pool)
        x = loop.x
        if sigma_eff > p.sigma_high_s:
            if (
                loop.action != "decrease"
                and admitted_prefill_tokens_per_s is not None
                and admitted_prefill_tokens_per_s >= 0
            ):
                snap = admitted_prefill_tokens_per_s * (1.0 + p.snap_margin) / b_max
                x = min(x, math.log(max(snap, 1e-300)))
            x -= (
                p.decrease_gain_per_s
                * dt
                * min(math.log(sigma_eff / p.sigma_high_s), p.max_log_error)
            )
            action: Action = "decrease"
        elif sigma_eff < p.sigma_low_s:
            err = math.log(p.sigma_low_s / sigma_eff) if sigma_eff > 0 else p.max_log_error
            x += p.increase_gain_per_s * dt * min(err, p.max_log_error)
            action = "increase"
        else:
            action = "hold"
        x = min(max(x, self._x_min), 0.0)

        loop.x, loop.last_t, loop.last_sigma, loop.action = x, now_s, itl_sigma_s, action
        self._loops[pool] = loop
        frac = math.exp(x)
        st = BackpressureState(
            pool=pool,
            time_s=now_s,
            saturation=sigma_eff / p.sigma_high_s,
            prefill_token_budget=max(1, int(frac * b_max)),
            budget_fraction=frac,
            sigma_eff_s=sigma_eff,
            action=action,
        )
        self._states[pool] = st
        return st

    def state(self, pool: str) -> BackpressureState | None:
        return self._states.get(pool)


class TokenBucket:
    """Token bucket: ``rate`` tokens/s, at most ``burst`` tokens banked.

    ``try_take(n, now_s)`` takes n tokens if available and returns None, else
    returns the seconds until n would be available (``inf`` if n > burst, which
    can never fit: callers cap requests at the burst). ``set_rate`` changes the
    rate without losing the tokens already banked.
    """

    def __init__(self, rate: float, burst: float, now_s: float = 0.0) -> None:
        if not (rate > 0 and burst > 0):
            raise ValueError(f"TokenBucket: rate={rate!r} and burst={burst!r} must be > 0")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._t = now_s

    def _refill(self, now_s: float) -> None:
        if now_s > self._t:
            self._tokens = min(self.burst, self._tokens + (now_s - self._t) * self.rate)
            self._t = now_s

    def set_rate(self, rate: float, now_s: float, burst: float | None = None) -> None:
        """New rate (and burst) from ``now_s`` on; banked tokens above a smaller
        burst are dropped."""
        if not rate > 0 or (burst is not None and not burst > 0):
            raise ValueError(f"TokenBucket: rate={rate!r} and burst={burst!r} must be > 0")
        self._refill(now_s)
        self.rate = float(rate)
        if burst is not None:
            self.burst = float(burst)
            self._tokens = min(self._tokens, self.burst)

    def try_take(self, n: float, now_s: float) -> float | None:
        self._refill(now_s)
        if n <= self._tokens:
            self._tokens -= n
            return None
        if n > self.burst:
            return math.inf
        return (n - self._tokens) / self.rate

    @property
    def tokens(self) -> float:
        return self._tokens
