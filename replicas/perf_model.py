"""Step-time distribution of one engine step, from measured profiles.

A step's cost depends on its *shape* (``StepShape``): the tokens it processes, how
many of them are prefill and against how much cached context, and how many decode
sequences read how many KV tokens. A ``PerfModel`` maps a shape to the mean and
variance of the step time (seconds), and draws a step time from that distribution.

Distribution: **lognormal on the step total**, with the mean and variance matched
to the profile's (μ, σ²): with s² = ln(1 + σ²/μ²), t = μ · exp(s·z − s²/2), z ~ N(0, 1).
Why lognormal: step times are positive and right-skewed (stragglers, clock
changes), and matching the first two moments keeps the profile's mean and spread
exactly; per-op draws would cost ~10× more for the same two moments.

Two implementations share the ``PerfModel`` interface:

* ``ProfiledPerfModel``: vidur GPU profiles (``replicas.profiles.StepProfile``).
* ``FittedPerfModel``: a linear fit of a measured engine (``cascade profile``),
  ``t = c0 + c1·tokens + c2·prefill_work + c3·decode_seqs + c4·decode_kv_tokens``
  with a constant coefficient of variation.

The hot path (``mean_var`` with plain scalars, ``draw`` with a pre-drawn z) does no
allocation; draw z in blocks from the injected ``numpy.random.Generator``.
"""

from __future__ import annotations

import csv
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from replicas.profiles import StepProfile, load_step_profile


@dataclass(frozen=True, slots=True)
class StepShape:
    """The shape of one engine step.

    prefill_work: Σ over prefilling requests of c·(k + c/2) for a chunk of c tokens
    after k cached ones (∝ attention FLOPs); decode_kv_tokens: KV tokens read by the
    decode sequences (Σ context lengths).
    """

    num_tokens: int
    n_prefill: int = 0
    prefill_tokens: int = 0
    prefill_work: float = 0.0
    n_decode: int = 0
    decode_kv_tokens: int = 0

    @property
    def batch_size(self) -> int:
        return self.n_prefill + self.n_decode


def lognormal_draw(mean: float, var: float, z: float) -> float:
    """A lognormal value with the given mean and variance, from a standard normal z."""
    if var <= 0.0 or mean <= 0.0:
        return mean
    s2 = math.log1p(var / (mean * mean))
    return mean * math.exp(math.sqrt(s2) * z - 0.5 * s2)


class PerfModel(ABC):
    """Step-time model of one replica (one model on one GPU type at one TP degree)."""

    name: str = "perf"

    @abstractmethod
    def mean_var(
        self,
        num_tokens: int,
        n_prefill: int,
        prefill_tokens: int,
        prefill_work: float,
        n_decode: int,
        decode_kv_tokens: int,
    ) -> tuple[float, float]:
        """(mean s, variance s²) of a step of this shape (hot path: scalars only)."""

    def shape_mean_var(self, shape: StepShape) -> tuple[float, float]:
        return self.mean_var(
            shape.num_tokens, shape.n_prefill, shape.prefill_tokens,
            shape.prefill_work, shape.n_decode, shape.decode_kv_tokens,
        )  # fmt: skip

    def sample(self, shape: StepShape, rng: np.random.Generator) -> float:
        """One step time (s) for ``shape``: a seeded lognormal draw."""
        m, v = self.shape_mean_var(shape)
        return lognormal_draw(m, v, float(rng.standard_normal()))

    def prefill_s_per_token(self, tokens: int = 1024) -> float:
        """Mean prefill cost per prompt token for a lone prefill of ``tokens``."""
        m, _ = self.mean_var(tokens, 1, tokens, tokens * tokens / 2.0, 0, 0)
        return m / tokens


class ProfiledPerfModel(PerfModel):
    """Step time from vidur profiles (see ``replicas.profiles``).

    mean = linear ops(num_tokens) + n_layers · attention(shape) + CPU overhead(batch);
    variance = linear ops' variance + (n_layers · attention · CV)² (layers correlated).
    """

    name = "vidur"

    def __init__(self, profile: StepProfile) -> None:
        self.profile = profile
        self._lin_m = profile.linear_mean.tolist()  # lists index faster than arrays
        self._lin_v = profile.linear_var.tolist()
        self._n_max = len(self._lin_m) - 1
        a = profile.attention
        L = profile.model.n_layers
        self._p = (L * a.p0, L * a.p1, L * a.p2)
        self._d = (L * a.d0, L * a.d1, L * a.d2)
        self._cvp2, self._cvd2 = a.cv_prefill**2, a.cv_decode**2

    @classmethod
    def load(cls, model: str, gpu: str, tp: int = 1) -> ProfiledPerfModel:
        return cls(load_step_profile(model, gpu, tp))

    def mean_var(
        self,
        num_tokens: int,
        n_prefill: int,
        prefill_tokens: int,
        prefill_work: float,
        n_decode: int,
        decode_kv_tokens: int,
    ) -> tuple[float, float]:
        if num_tokens <= self._n_max:
            m = self._lin_m[num_tokens]
            v = self._lin_v[num_tokens]
        else:
            top = self._lin_m[self._n_max]
            m = top + self.profile.linear_slope * (num_tokens - self._n_max)
            v = self._lin_v[self._n_max] * (m / top) ** 2
        if n_prefill:
            p0, p1, p2 = self._p
            ap = p0 * n_prefill + p1 * prefill_tokens + p2 * prefill_work
            m += ap
            v += ap * ap * self._cvp2
        if n_decode:
            d0, d1, d2 = self._d
            ad = d0 + d1 * n_decode + d2 * decode_kv_tokens
            m += ad
            v += ad * ad * self._cvd2
        m += self.profile.cpu_a + self.profile.cpu_b * (n_prefill + n_decode)
        return m, v


@dataclass(frozen=True, slots=True)
class FittedPerfModel(PerfModel):
    """Linear step-time model fitted to a measured engine (``cascade profile``).

    t = c0 + c1·num_tokens + c2·prefill_work + c3·n_decode + c4·decode_kv_tokens (s),
    with a constant coefficient of variation ``cv`` (the median measured std/mean).
    """

    coef: tuple[float, float, float, float, float]
    cv: float
    source: str = ""
    name: str = "fitted"

    def mean_var(
        self,
        num_tokens: int,
        n_prefill: int,
        prefill_tokens: int,
        prefill_work: float,
        n_decode: int,
        decode_kv_tokens: int,
    ) -> tuple[float, float]:
        c0, c1, c2, c3, c4 = self.coef
        m = c0 + c1 * num_tokens + c2 * prefill_work + c3 * n_decode + c4 * decode_kv_tokens
        m = max(m, 1e-6)
        return m, (self.cv * m) ** 2

    @classmethod
    def from_csv(cls, path: str | Path) -> FittedPerfModel:
        """Fit a ``cascade profile`` CSV (columns ``prefill_tokens, decode_seqs,
        kv_len, time_stats.step.mean, time_stats.step.std`` in ms, one row per grid
        point). Raises ``FileNotFoundError`` / ``ValueError`` (line and column)."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"profile not found: {p}")
        rows: list[tuple[float, float, float, float, float]] = []
        with p.open(newline="") as f:
            for lineno, row in enumerate(csv.DictReader(f), start=2):
                try:
                    pt = float(row["prefill_tokens"])
                    ds = float(row["decode_seqs"])
                    kv = float(row["kv_len"])
                    mean = float(row["time_stats.step.mean"]) * 1e-3
                    std = float(row["time_stats.step.std"]) * 1e-3
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"{p}:{lineno}: bad profile row ({exc})") from None
                if not (mean > 0 and std >= 0):
                    raise ValueError(f"{p}:{lineno}: step mean must be > 0 and std >= 0")
                rows.append((pt, ds, kv, mean, std))
        if len(rows) < 5:
            raise ValueError(f"{p}: need at least 5 grid points to fit, got {len(rows)}")
        a = np.asarray(rows)
        x = np.column_stack(
            [np.ones(len(a)), a[:, 0] + a[:, 1], a[:, 0] ** 2 / 2.0, a[:, 1], a[:, 1] * a[:, 2]]
        )
        coef, *_ = np.linalg.lstsq(x, a[:, 3], rcond=None)
        cv = float(np.median(a[:, 4] / a[:, 3]))
        c = tuple(float(v) for v in coef)
        return cls((c[0], c[1], c[2], c[3], c[4]), cv, str(p))


def build_perf_model(model: str, gpu: str, tp: int = 1, profile: str | None = None) -> PerfModel:
    """The perf model for a pool: a measured profile CSV when ``profile`` is given,
    else the vidur profiles for (``model``, ``gpu``, ``tp``)."""
    if profile:
        return FittedPerfModel.from_csv(profile)
    return ProfiledPerfModel.load(model, gpu, tp)
