"""``Summary``: the mergeable per-metric summary that travels between the parts.

Exact moments (n, mean, M2) plus a relative-error quantile sketch. It is what a
replica puts in a ``ReplicaSnapshot`` for each latency metric and what every
``Hierarchy`` node keeps. Fixed size: 3 floats + at most ``max_bins`` counters.
"""

from __future__ import annotations

from typing import Any

from numpy.typing import ArrayLike

from uncertainty.moments import Moments
from uncertainty.sketch import QuantileSketch
from uncertainty.validation import FloatArray, as_samples


class Summary:
    """Moments + quantile sketch of one non-negative metric (seconds, tokens).

    ``update`` validates a batch once (``ValueError`` on NaN/inf/negative/empty,
    nothing changed); ``merge`` is exact for the moments and keeps the sketch's α.
    """

    __slots__ = ("moments", "sketch")

    def __init__(self, alpha: float = 0.01) -> None:
        self.moments = Moments()
        self.sketch = QuantileSketch(alpha)

    @property
    def n(self) -> int:
        return self.moments.n

    @property
    def mean(self) -> float:
        return self.moments.mean

    @property
    def var(self) -> float:
        return self.moments.var

    @property
    def std(self) -> float:
        return self.moments.std

    def quantile(self, q: float) -> float:
        return self.sketch.quantile(q)

    def quantiles(self, qs: ArrayLike) -> FloatArray:
        return self.sketch.quantiles(qs)

    def update(self, values: ArrayLike, *, what: str = "values") -> Summary:
        x = as_samples(values, what=what)
        self.moments._combine(x.size, float(x.mean()), float(((x - x.mean()) ** 2).sum()))
        self.sketch._add(x)
        return self

    def merge(self, other: Summary) -> Summary:
        self.moments.merge(other.moments)
        self.sketch.merge(other.sketch)
        return self

    def copy(self) -> Summary:
        s = Summary.__new__(Summary)
        s.moments = self.moments.copy()
        s.sketch = self.sketch.copy()
        return s

    @property
    def nbytes(self) -> int:
        return 3 * 8 + self.sketch.nbytes

    def to_dict(self) -> dict[str, Any]:
        return {"moments": self.moments.to_dict(), "sketch": self.sketch.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Summary:
        s = cls.__new__(cls)
        s.moments = Moments.from_dict(d["moments"])
        s.sketch = QuantileSketch.from_dict(d["sketch"])
        if s.moments.n != s.sketch.n:
            raise ValueError("Summary.from_dict: moments and sketch counts differ")
        return s

    def __repr__(self) -> str:
        return f"Summary(n={self.n}, mean={self.mean:.6g}, std={self.std:.6g})"
