"""Exact mergeable moments: count, mean and M2 (sum of squared deviations).

Chan, Golub and LeVeque's parallel combination makes merging exact: the summary
of a stream equals the merge of the summaries of any split of it (up to floating
point rounding, ~1e-12 relative). Memory is O(1): three floats.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from uncertainty.validation import as_samples


class Moments:
    """Mergeable (n, mean, M2) of a stream of samples.

    ``update`` takes a batch (numpy array) and is vectorized; ``merge`` combines
    another summary into this one in place. ``var`` is the unbiased sample
    variance (n - 1 denominator); it is 0.0 for fewer than two samples.

    Bad batches (empty, NaN, inf, negative when ``nonnegative``) raise
    ``ValueError`` and leave the summary unchanged.
    """

    __slots__ = ("_m2", "_mean", "_n", "nonnegative")

    def __init__(self, *, nonnegative: bool = True) -> None:
        self.nonnegative = nonnegative
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0

    @property
    def n(self) -> int:
        return self._n

    @property
    def mean(self) -> float:
        """Mean of all samples; NaN when empty."""
        return self._mean if self._n else float("nan")

    @property
    def var(self) -> float:
        """Unbiased sample variance (units²)."""
        return self._m2 / (self._n - 1) if self._n > 1 else 0.0

    @property
    def std(self) -> float:
        return float(np.sqrt(self.var))

    @property
    def m2(self) -> float:
        return self._m2

    def update(self, values: ArrayLike) -> Moments:
        x = as_samples(values, nonnegative=self.nonnegative)
        nb = x.size
        mb = float(x.mean())
        d = x - mb
        m2b = float(d @ d)
        self._combine(nb, mb, m2b)
        return self

    def merge(self, other: Moments) -> Moments:
        """Fold ``other`` into this summary (in place); ``other`` is unchanged."""
        if other._n:
            self._combine(other._n, other._mean, other._m2)
        return self

    def _combine(self, nb: int, mb: float, m2b: float) -> None:
        na = self._n
        if na == 0:
            self._n, self._mean, self._m2 = nb, mb, m2b
            return
        n = na + nb
        delta = mb - self._mean
        self._mean += delta * nb / n
        self._m2 += m2b + delta * delta * na * nb / n
        self._n = n

    def copy(self) -> Moments:
        m = Moments(nonnegative=self.nonnegative)
        m._n, m._mean, m._m2 = self._n, self._mean, self._m2
        return m

    def to_dict(self) -> dict[str, Any]:
        return {"n": self._n, "mean": self._mean, "m2": self._m2, "nonnegative": self.nonnegative}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Moments:
        m = cls(nonnegative=bool(d.get("nonnegative", True)))
        n, mean, m2 = int(d["n"]), float(d["mean"]), float(d["m2"])
        if n < 0 or not np.isfinite(mean) or not np.isfinite(m2) or m2 < 0:
            raise ValueError(f"Moments.from_dict: invalid state {d!r}")
        m._n, m._mean, m._m2 = n, mean, m2
        return m

    def __repr__(self) -> str:
        return f"Moments(n={self._n}, mean={self.mean:.6g}, std={self.std:.6g})"
