"""Exponentially decayed mean and variance with an autocorrelation-aware CI.

Why decay: a replica's latency distribution drifts (load, batch mix, KV pressure),
so the controller wants "the last few hundred tokens" or "the last 30 s", not the
whole history. Why autocorrelation: consecutive inter-token latencies share a batch
and are strongly dependent (ρ ≈ 0.5–0.9 is typical); an i.i.d. confidence interval
for the mean is then far too narrow. We keep a lag-1 autocorrelation estimate and
shrink the effective sample size by the AR(1) factor (1 − ρ)/(1 + ρ).

State (all decayed): W = Σw, W2 = Σw², the weighted mean, S = Σw(x − mean)², and
the same for lag-1 pairs (x[t−1], x[t]) to estimate ρ. A batch is folded in with
the weighted form of Chan's parallel combination, so a batch update equals the
sequence of single-sample updates (to rounding), and merging two estimators with
the same half-life is exact.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from uncertainty.validation import FloatArray, as_samples, as_times, check_level

_RHO_CLIP = 0.995  # |ρ| is clipped so that (1 − ρ)/(1 + ρ) stays finite


def _weighted(x: FloatArray, w: FloatArray) -> tuple[float, float]:
    """(weighted mean, Σ w (x − mean)²) of one batch."""
    wsum = float(w.sum())
    if wsum <= 0.0:
        return 0.0, 0.0
    m = float(w @ x) / wsum
    d = x - m
    return m, float(w @ (d * d))


class DecayedWelford:
    """Exponentially decayed mean / variance / lag-1 autocorrelation.

    Args:
        halflife_samples: a sample's weight halves after this many newer samples.
        halflife_s: a sample's weight halves after this many seconds (time decay,
            for irregular arrivals); ``update`` then requires ``times`` (seconds,
            non-decreasing, from the injected clock).
        Exactly one of the two must be given.
        nonnegative: reject negative samples (latencies); default True.

    Failure modes: a batch with NaN/inf/negative values, an empty batch, or
    ``times`` that are missing (time decay), mismatched in length, decreasing,
    or earlier than the last update raise ``ValueError`` and change nothing.
    """

    def __init__(
        self,
        halflife_samples: float | None = None,
        halflife_s: float | None = None,
        *,
        nonnegative: bool = True,
    ) -> None:
        if (halflife_samples is None) == (halflife_s is None):
            raise ValueError("give exactly one of halflife_samples or halflife_s")
        h = halflife_samples if halflife_samples is not None else halflife_s
        assert h is not None
        if not (math.isfinite(h) and h > 0):
            raise ValueError(f"half-life must be finite and > 0, got {h!r}")
        self.halflife_samples = halflife_samples
        self.halflife_s = halflife_s
        self.nonnegative = nonnegative
        self._ln_decay = math.log(2.0) / h  # decay rate per sample or per second
        self._w = 0.0
        self._w2 = 0.0
        self._mean = 0.0
        self._s = 0.0
        # lag-1 pairs (x = previous sample, y = current sample)
        self._pw = 0.0
        self._pmx = 0.0
        self._pmy = 0.0
        self._psxx = 0.0
        self._psyy = 0.0
        self._psxy = 0.0
        self._last: float | None = None
        self._t_last: float | None = None
        self._count = 0
        self._wcache: dict[int, FloatArray] = {}

    # ---- read-outs -------------------------------------------------------------
    @property
    def count(self) -> int:
        """Raw number of samples ever seen (not decayed)."""
        return self._count

    @property
    def mean(self) -> float:
        """Decayed mean; NaN before the first sample."""
        return self._mean if self._w > 0 else float("nan")

    @property
    def var(self) -> float:
        """Decayed variance with the reliability-weights correction
        S / (W − W2/W), the weighted analogue of the n − 1 denominator."""
        if self._w <= 0:
            return 0.0
        denom = self._w - self._w2 / self._w
        return self._s / denom if denom > 1e-12 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    @property
    def n_eff(self) -> float:
        """Kish effective sample size W²/W2 of the decayed weights (i.i.d. sense)."""
        return self._w * self._w / self._w2 if self._w2 > 0 else 0.0

    @property
    def autocorr(self) -> float:
        """Decayed lag-1 autocorrelation estimate, in [−0.995, 0.995]; 0.0 until
        there are a few pairs."""
        if self._pw <= 0 or self._psxx <= 0 or self._psyy <= 0:
            return 0.0
        r = self._psxy / math.sqrt(self._psxx * self._psyy)
        return max(-_RHO_CLIP, min(_RHO_CLIP, r))

    @property
    def n_eff_ar(self) -> float:
        """Effective sample size for the mean under AR(1) dependence:
        n_eff · (1 − ρ)/(1 + ρ)."""
        rho = self.autocorr
        return self.n_eff * (1.0 - rho) / (1.0 + rho)

    def ci(self, level: float = 0.95, *, iid: bool = False) -> tuple[float, float]:
        """Confidence interval for the (decayed) mean at ``level``.

        Student-t with the AR(1)-adjusted effective n (``iid=True`` gives the naive
        i.i.d. interval, for comparison only: it undercovers badly when ρ > 0).
        Returns (nan, nan) with fewer than two effective samples.
        """
        check_level(level)
        n = self.n_eff if iid else self.n_eff_ar
        if n < 2.0 or self._w <= 0:
            return (float("nan"), float("nan"))
        t = float(stats.t.ppf(0.5 + level / 2.0, df=n - 1.0))
        half = t * math.sqrt(self.var / n)
        return (self._mean - half, self._mean + half)

    # ---- updates ---------------------------------------------------------------
    def _sample_weights(self, k: int) -> FloatArray:
        w = self._wcache.get(k)
        if w is None:
            w = np.exp(-self._ln_decay * np.arange(k - 1, -1, -1, dtype=np.float64))
            if len(self._wcache) < 16:
                self._wcache[k] = w
        return w

    def update(self, values: ArrayLike, times: ArrayLike | None = None) -> DecayedWelford:
        """Fold a batch of samples (oldest first) into the estimate.

        ``times`` (seconds) are required with ``halflife_s``; with
        ``halflife_samples`` they are optional and only validated.
        """
        x = as_samples(values, nonnegative=self.nonnegative)
        k = x.size
        t: FloatArray | None = None
        if times is not None:
            t = as_times(times, k, after=self._t_last)
        if self.halflife_s is not None:
            if t is None:
                raise ValueError("times are required when the half-life is in seconds")
            t_end = float(t[-1])
            w = np.exp(-self._ln_decay * (t_end - t))
            scale = (
                math.exp(-self._ln_decay * (t_end - self._t_last))
                if self._t_last is not None
                else 0.0
            )
        else:
            w = self._sample_weights(k)
            scale = math.exp(-self._ln_decay * k)
        self._decay(scale)
        mb, sb = _weighted(x, w)
        wb = float(w.sum())
        self._w, self._mean, self._s = _chan(self._w, self._mean, self._s, wb, mb, sb)
        self._w2 += float(w @ w)
        # lag-1 pairs: (previous, current), weighted by the current sample's weight
        if self._last is not None:
            prev, cur, pw = np.concatenate(([self._last], x[:-1])), x, w
        else:
            prev, cur, pw = x[:-1], x[1:], w[1:]
        if pw.size:
            self._fold_pairs(prev, cur, pw)
        self._last = float(x[-1])
        if t is not None:
            self._t_last = float(t[-1])
        self._count += k
        return self

    def _decay(self, scale: float) -> None:
        self._w *= scale
        self._s *= scale
        self._w2 *= scale * scale
        self._pw *= scale
        self._psxx *= scale
        self._psyy *= scale
        self._psxy *= scale

    def _fold_pairs(self, px: FloatArray, py: FloatArray, w: FloatArray) -> None:
        wb = float(w.sum())
        if wb <= 0:
            return
        mx = float(w @ px) / wb
        my = float(w @ py) / wb
        dx, dy = px - mx, py - my
        sxx, syy, sxy = float(w @ (dx * dx)), float(w @ (dy * dy)), float(w @ (dx * dy))
        self._combine_pairs(wb, mx, my, sxx, syy, sxy)

    def _combine_pairs(
        self, wb: float, mx: float, my: float, sxx: float, syy: float, sxy: float
    ) -> None:
        """Weighted Chan combination of a pair summary into this one."""
        wa = self._pw
        if wa <= 0:
            self._pw, self._pmx, self._pmy = wb, mx, my
            self._psxx, self._psyy, self._psxy = sxx, syy, sxy
            return
        w_tot = wa + wb
        ex, ey = mx - self._pmx, my - self._pmy
        f = wa * wb / w_tot
        self._psxx += sxx + ex * ex * f
        self._psyy += syy + ey * ey * f
        self._psxy += sxy + ex * ey * f
        self._pmx += ex * wb / w_tot
        self._pmy += ey * wb / w_tot
        self._pw = w_tot

    def merge(self, other: DecayedWelford) -> DecayedWelford:
        """Fold ``other`` (same half-life) into this one, in place.

        Time-decayed estimators are first decayed to the later of their two last
        times. Pairs spanning the two streams do not exist and are not invented.
        """
        if (self.halflife_samples, self.halflife_s) != (other.halflife_samples, other.halflife_s):
            raise ValueError("merge: estimators must have the same half-life")
        if other._w <= 0 and other._count == 0:
            return self
        o = other.copy()
        if self.halflife_s is not None:
            ts = [t for t in (self._t_last, o._t_last) if t is not None]
            t_ref = max(ts) if ts else None
            if t_ref is not None:
                if self._t_last is not None:
                    self._decay(math.exp(-self._ln_decay * (t_ref - self._t_last)))
                if o._t_last is not None:
                    o._decay(math.exp(-self._ln_decay * (t_ref - o._t_last)))
                self._t_last = t_ref
        self._w, self._mean, self._s = _chan(self._w, self._mean, self._s, o._w, o._mean, o._s)
        self._w2 += o._w2
        if o._pw > 0:
            self._combine_pairs(o._pw, o._pmx, o._pmy, o._psxx, o._psyy, o._psxy)
        self._count += o._count
        if self._last is None:
            self._last = o._last
        return self

    def copy(self) -> DecayedWelford:
        return DecayedWelford.from_dict(self.to_dict())

    _FIELDS = ("_w", "_w2", "_mean", "_s", "_pw", "_pmx", "_pmy", "_psxx", "_psyy", "_psxy")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f.lstrip("_"): getattr(self, f) for f in self._FIELDS}
        d.update(
            halflife_samples=self.halflife_samples,
            halflife_s=self.halflife_s,
            nonnegative=self.nonnegative,
            last=self._last,
            t_last=self._t_last,
            count=self._count,
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecayedWelford:
        est = cls(
            halflife_samples=d.get("halflife_samples"),
            halflife_s=d.get("halflife_s"),
            nonnegative=bool(d.get("nonnegative", True)),
        )
        for f in cls._FIELDS:
            v = float(d[f.lstrip("_")])
            if not math.isfinite(v):
                raise ValueError(f"DecayedWelford.from_dict: {f.lstrip('_')} is not finite")
            setattr(est, f, v)
        est._last = None if d.get("last") is None else float(d["last"])
        est._t_last = None if d.get("t_last") is None else float(d["t_last"])
        est._count = int(d.get("count", 0))
        return est

    def __repr__(self) -> str:
        return (
            f"DecayedWelford(mean={self.mean:.6g}, std={self.std:.6g}, "
            f"n_eff={self.n_eff:.1f}, autocorr={self.autocorr:.3f})"
        )


def _chan(
    wa: float, ma: float, sa: float, wb: float, mb: float, sb: float
) -> tuple[float, float, float]:
    """Weighted Chan et al. combination of (W, mean, S) summaries."""
    if wb <= 0:
        return wa, ma, sa
    if wa <= 0:
        return wb, mb, sb
    w = wa + wb
    delta = mb - ma
    return w, ma + delta * wb / w, sa + sb + delta * delta * wa * wb / w
