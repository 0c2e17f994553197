"""Online conformal correction of predicted quantiles (adaptive conformal inference).

A model's predicted q-quantile ``ŷ_t`` of a latency is right when the outcome
``y_t`` exceeds it a share α = 1 − q of the time. Models drift (load, output
lengths, a stale fit); ``QuantileTracker`` holds the miss rate at α anyway with
the online update of adaptive conformal inference (Gibbs & Candès, NeurIPS 2021)
written on the score scale, as quantile tracking (Angelopoulos, Candès &
Tibshirani, "Conformal PID control", NeurIPS 2023, the P term):

    issued prediction      ŷ'_t = ŷ_t · exp(θ_t)                 (θ: a log-scale offset)
    miss                   err_t = 1{y_t > ŷ'_t}
    update                 θ_{t+1} = θ_t + η · (err_t − α)

A miss raises θ by η(1 − α), a hit lowers it by ηα: θ settles where misses happen
a share α of the time. Working on log y (the conformity score is
s_t = log y_t − log ŷ_t, and err_t = 1{s_t > θ_t}) makes η unit-free: 0.05 moves
a quantile by about 5 %.

**Guarantee** (deterministic, for *any* sequence of outcomes, drifting or
adversarial: no exchangeability needed). Summing the update telescopes:
Σ_{t≤T} (err_t − α) = (θ_{T+1} − θ_1)/η. If every score satisfies |s_t| ≤ B, θ
stays in [−B − η, B + η] (it only rises while θ < s_t ≤ B and only falls while
misses are rare), so

    | (1/T) Σ_{t≤T} err_t − α |  ≤  (2B + 2η) / (η T)          for every T.

With feedback delayed by up to d predictions (an outcome is known only when the
request completes), θ can overshoot by another η·d, and the bound becomes
(2B + 2η(1 + d))/(ηT). The long-run miss rate is α exactly; the bound says how
fast. θ is clipped to ±``bound`` (default 5: a factor e⁵ ≈ 148) so that one absurd
outcome cannot wreck the offset; the guarantee holds whenever the scores stay
inside it (otherwise the model, not the correction, needs fixing).

**Warm start** (off by default). A stream's first ``warmup`` outcomes set θ to the
empirical (1 − α) quantile of their scores against the model's raw prediction
(split conformal on what has been seen; for α = 0.01 that is the largest score,
conservative), instead of crawling there by steps of η; the update above runs
from then on. The guarantee then holds from outcome ``warmup`` on: the bound
gains at most ``warmup``/T. Off by default because a simulation (and a
deployment) starts empty: the first outcomes come from an idle cluster and from
the shortest answers (they finish first), so their score quantile is far below
the steady state's, and the miss share error is (θ_end − θ_start)/(ηT): on a
10 s heavy-tail run it turned a 3.8 % TTFT P99 miss share into 16.9 %.

**With the model's raw prediction** (``update(..., raw=)``, what the gateway
does) the offset is the PID form instead: θ = q + clip(k·E, ±``i_cap``), where the
P term q tracks the scores' (1 − α) quantile, each outcome scored against the
*current* q (q ← q + η(1{s_t > q} − α)), and the I term E = Σ(err_t − α)
integrates the *issued* misses. Under long feedback delays the update above
overshoots (outcomes issued before θ caught up keep pushing; measured: θ at the
bound within a minute of azure-conv); P does not, and I removes the lag bias P
leaves. Guarantee: Σ_{t≤T}(err_t − α) = E_T exactly, so while the I term is not
saturated |mean miss − α| ≤ i_cap/(k·T) (= 50/T with the defaults), for any
sequence. docs/uncertainty.md, "Calibration".

One tracker corrects one quantile level of one stream; ``ConformalCorrector``
keeps one per (pool, class, metric, level). Pure; no clock.

Failure modes: ``update`` raises ``ValueError`` for a NaN, infinite, negative or
zero prediction or outcome (nothing changes).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

DEFAULT_STEP = 0.05  # η on the log scale
DEFAULT_BOUND = 5.0  # |θ| ≤ bound
DEFAULT_GAIN = 0.02  # I gain: log-offset per excess issued miss
DEFAULT_I_CAP = 1.0  # |I term| <= this (log scale)
DEFAULT_WARMUP = 0  # outcomes whose score quantile sets θ before the update runs (0: off)


class QuantileTracker:
    """Adaptive conformal correction of one predicted quantile (module docstring).

    Args:
        miss_rate: the target α = 1 − q (e.g. 0.01 for a P99), in (0, 1).
        step: η > 0, on the log scale.
        bound: |θ| is clipped to this (log scale).
        warmup: outcomes (with their raw prediction) that set θ by their score
            quantile first (0: none).
    """

    __slots__ = (
        "_scores", "bound", "gain", "i_cap", "integral", "miss_rate", "misses", "n", "q",
        "step", "theta", "warmup",
    )  # fmt: skip

    def __init__(
        self,
        miss_rate: float,
        step: float = DEFAULT_STEP,
        bound: float = DEFAULT_BOUND,
        warmup: int = DEFAULT_WARMUP,
        gain: float = DEFAULT_GAIN,
        i_cap: float = DEFAULT_I_CAP,
    ) -> None:
        if not 0.0 < miss_rate < 1.0:
            raise ValueError(f"miss_rate must be in (0, 1), got {miss_rate!r}")
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"step must be finite and > 0, got {step!r}")
        if not (math.isfinite(bound) and bound > 0):
            raise ValueError(f"bound must be finite and > 0, got {bound!r}")
        self.miss_rate = miss_rate
        self.step = step
        self.bound = bound
        self.warmup = max(int(warmup), 0)
        self._scores: list[float] = []
        self.theta = 0.0
        self.q = 0.0  # P: the tracked score quantile
        self.integral = 0.0  # I: Σ (issued miss − α)
        self.gain = gain
        self.i_cap = i_cap
        self.n = 0
        self.misses = 0

    @property
    def factor(self) -> float:
        """The multiplicative correction exp(θ) applied to the model's quantile."""
        return math.exp(self.theta)

    def correct(self, predicted: float) -> float:
        """The issued prediction: ``predicted`` · exp(θ)."""
        return predicted * math.exp(self.theta)

    def update(self, issued: float, observed: float, raw: float | None = None) -> bool:
        """Feed back one outcome against the prediction that was *issued* for it
        (corrected with the θ of its time: with delayed feedback, θ may have
        moved since). ``raw``: the model's own prediction, for the warm start.
        Returns whether it was a miss (observed > issued)."""
        _check("issued", issued)
        _check("observed", observed)
        if raw is not None:
            _check("raw", raw)
        miss = observed > issued
        if raw is not None and len(self._scores) < self.warmup:
            self._scores.append(math.log(max(observed, 1e-12) / max(raw, 1e-12)))
            k = min(math.ceil((1.0 - self.miss_rate) * len(self._scores)), len(self._scores))
            theta = sorted(self._scores)[k - 1]
        elif raw is None:  # plain ACI on the issued errors
            theta = self.theta + self.step * ((1.0 if miss else 0.0) - self.miss_rate)
        else:
            # P: track the (1 − α) quantile of the scores, each scored against the
            # *current* q (under delayed feedback, outcomes issued before q caught
            # up would otherwise keep pushing it far past where it covers:
            # measured, the issued-error update ran θ to the bound, ×148)
            s = math.log(max(observed, 1e-12) / max(raw, 1e-12))
            q = self.q + self.step * ((1.0 if s > self.q else 0.0) - self.miss_rate)
            self.q = min(max(q, -self.bound), self.bound)
            # I: the issued errors' running excess, so that the lag of P cannot
            # leave a lasting miss-rate bias (conformal PID's integrator)
            self.integral += (1.0 if miss else 0.0) - self.miss_rate
            i_term = min(max(self.gain * self.integral, -self.i_cap), self.i_cap)
            theta = self.q + i_term
        self.theta = min(max(theta, -self.bound), self.bound)
        self.n += 1
        self.misses += miss
        return miss

    @property
    def observed_miss_rate(self) -> float:
        """Misses / outcomes so far (NaN before any)."""
        return self.misses / self.n if self.n else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "miss_rate": self.miss_rate,
            "step": self.step,
            "bound": self.bound,
            "theta": self.theta,
            "n": self.n,
            "misses": self.misses,
            "warmup": self.warmup,
            "scores": list(self._scores),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantileTracker:
        t = cls(float(d["miss_rate"]), float(d["step"]), float(d["bound"]), int(d.get("warmup", 0)))
        t._scores = [float(x) for x in d.get("scores", [])]
        t.theta = min(max(float(d["theta"]), -t.bound), t.bound)
        t.n, t.misses = int(d["n"]), int(d["misses"])
        return t


class ConformalCorrector:
    """One ``QuantileTracker`` per (stream key, quantile level), made on first use.

    ``key`` is any hashable, e.g. (pool, class, metric); ``level`` the quantile
    (0.5, 0.9, 0.99), whose miss target is 1 − level.
    """

    def __init__(self, step: float = DEFAULT_STEP, bound: float = DEFAULT_BOUND) -> None:
        self.step = step
        self.bound = bound
        self.trackers: dict[tuple[Hashable, float], QuantileTracker] = {}

    def tracker(self, key: Hashable, level: float) -> QuantileTracker:
        t = self.trackers.get((key, level))
        if t is None:
            t = self.trackers[(key, level)] = QuantileTracker(1.0 - level, self.step, self.bound)
        return t

    def correct(self, key: Hashable, level: float, predicted: float) -> float:
        return self.tracker(key, level).correct(predicted)

    def update(
        self, key: Hashable, level: float, issued: float, observed: float, raw: float | None = None
    ) -> bool:
        return self.tracker(key, level).update(issued, observed, raw)


def _check(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={value!r}: must be a finite latency >= 0 (no NaN or inf)")
