"""Online output-length prediction: a mergeable length distribution per request key.

Output length is the largest uncertainty in a request's E2E latency, and a
request's ``max_tokens`` only caps it (clients ask for far more than they get).
``OutputLengthModel`` learns, from completed requests, the distribution of output
lengths per key

    (SLO class, prompt-length bucket, max_tokens bucket)

as a ``Summary`` (exact moments + a relative-error ``QuantileSketch``), and keeps
the coarser keys (class + prompt bucket; class; everything) up to date at the same
time, so a query falls back to the finest key with at least ``min_samples``
completions. A prediction (``LengthPrediction``) is that distribution *capped by
the request's own* ``max_tokens`` (a request cannot answer more): equally spaced
quantiles (the grid a mixture over lengths needs), their mean and σ, and any
quantile. With no key trained yet the prediction is ``None``: the caller keeps
``max_tokens`` as an upper bound.

Everything is mergeable (``merge`` adds the summaries of another model; the
controller merges the gateways' per-period deltas, exactly as ``Hierarchy``
merges replicas), serialisable (``to_dict`` / ``from_dict``) and pure.
Completions are validated one by one and folded into the sketches in batches of
``FLUSH_EVERY`` (a batch costs about what one value does), so a prediction may
not yet count the last ``FLUSH_EVERY − 1`` of them; ``flush``, ``n``, ``merge``,
``copy`` and ``to_dict`` fold them in first.

Failure modes: ``observe`` raises ``ValueError`` naming the bad field for a NaN,
infinite, negative or zero length, a length above its ``max_tokens`` (the engine
caps it: such a record is corrupt), or a bad prompt length; nothing changes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from uncertainty.summary import Summary
from uncertainty.validation import FloatArray

PROMPT_BOUNDS = (256, 1024, 4096)  # prompt-length buckets: <= 256, <= 1024, <= 4096, more
MAX_TOKENS_BOUNDS = (64, 256, 1024, 4096)  # max_tokens buckets, likewise
GRID = 32  # equally weighted length points of a prediction (quantile midpoints)
FLUSH_EVERY = 32  # completions buffered before they are folded into the sketches
_ANY = -1  # the "any bucket" index of a coarser key
Key = tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class LengthPrediction:
    """One request's predicted output-length distribution (tokens), capped by its
    ``max_tokens``. ``grid``: GRID equally weighted lengths (the quantiles at the
    midpoints (k + ½)/GRID), ascending, each in [1, max_tokens]; ``samples``: the
    completions the distribution was learned from; ``level``: the key it came
    from (3 = class + prompt + max_tokens bucket, … 0 = all requests)."""

    grid: FloatArray
    max_tokens: int
    samples: int
    level: int
    _sketch: Summary

    @property
    def mean(self) -> float:
        return float(self.grid.mean())

    @property
    def std(self) -> float:
        return float(self.grid.std())

    def quantile(self, q: float) -> float:
        """The q-quantile (capped at ``max_tokens``, at least 1 token)."""
        v = self._sketch.quantile(q)
        return float(min(max(v, 1.0), self.max_tokens))


class OutputLengthModel:
    """See the module docstring.

    Args:
        alpha: the sketches' relative accuracy (2 %: a length within ±2 %).
        min_samples: completions a key needs before it predicts; coarser keys
            answer until then.
        prompt_bounds, max_tokens_bounds: bucket upper bounds (ascending).
    """

    def __init__(
        self,
        *,
        alpha: float = 0.02,
        min_samples: int = 30,
        prompt_bounds: Sequence[int] = PROMPT_BOUNDS,
        max_tokens_bounds: Sequence[int] = MAX_TOKENS_BOUNDS,
    ) -> None:
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples!r}")
        for name, bounds in (
            ("prompt_bounds", prompt_bounds),
            ("max_tokens_bounds", max_tokens_bounds),
        ):
            if list(bounds) != sorted(set(bounds)) or any(b < 1 for b in bounds):
                raise ValueError(f"{name} must be ascending positive integers, got {bounds!r}")
        self.alpha = alpha
        self.min_samples = int(min_samples)
        self.prompt_bounds = tuple(int(b) for b in prompt_bounds)
        self.max_tokens_bounds = tuple(int(b) for b in max_tokens_bounds)
        self.summaries: dict[Key, Summary] = {}
        self._cache: dict[Key, tuple[int, FloatArray]] = {}
        self._pending: dict[Key, list[float]] = {}
        self._npending = 0
        self._qs = (np.arange(GRID) + 0.5) / GRID

    # ---- keys ----------------------------------------------------------------------
    def prompt_bucket(self, prompt_tokens: int) -> int:
        return bisect.bisect_left(self.prompt_bounds, prompt_tokens)

    def max_tokens_bucket(self, max_tokens: int) -> int:
        return bisect.bisect_left(self.max_tokens_bounds, max_tokens)

    def keys(self, slo_class: str, prompt_tokens: int, max_tokens: int) -> tuple[Key, ...]:
        """The request's keys, finest first (level 3 … 0)."""
        p, m = self.prompt_bucket(prompt_tokens), self.max_tokens_bucket(max_tokens)
        return ((slo_class, p, m), (slo_class, p, _ANY), (slo_class, _ANY, _ANY), ("", _ANY, _ANY))

    @property
    def n(self) -> int:
        """Completions learned (the all-requests key's count)."""
        self.flush()
        s = self.summaries.get(("", _ANY, _ANY))
        return s.n if s is not None else 0

    def mean_tokens(self) -> float | None:
        """Mean output length (tokens) over every completion learned; None before
        ``min_samples`` of them."""
        self.flush()
        s = self.summaries.get(("", _ANY, _ANY))
        return s.mean if s is not None and s.n >= self.min_samples else None

    def overall_quantiles(self, qs: Sequence[float] | FloatArray) -> FloatArray | None:
        """Quantiles ``qs`` of every completion's length (tokens, not capped by
        any ``max_tokens``); None before ``min_samples`` completions."""
        self.flush()
        s = self.summaries.get(("", _ANY, _ANY))
        return s.quantiles(qs) if s is not None and s.n >= self.min_samples else None

    # ---- learning ------------------------------------------------------------------
    def observe(
        self, slo_class: str, prompt_tokens: int, max_tokens: int, output_tokens: float
    ) -> None:
        """Learn one completed request's output length (tokens); see the module
        docstring for what is refused."""
        _check(slo_class, prompt_tokens, max_tokens, output_tokens)
        for key in self.keys(slo_class, prompt_tokens, max_tokens):
            self._pending.setdefault(key, []).append(float(output_tokens))
        self._npending += 1
        if self._npending >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Fold the buffered completions into the sketches (one batch per key)."""
        if not self._npending:
            return
        for key, values in self._pending.items():
            s = self.summaries.get(key)
            if s is None:
                s = self.summaries[key] = Summary(self.alpha)
            s.update(values, what="output_tokens")
        self._pending, self._npending = {}, 0

    def merge(self, other: OutputLengthModel) -> OutputLengthModel:
        """Add ``other``'s summaries to this model (in place; exact). ``ValueError``
        if the buckets or α differ."""
        if (other.prompt_bounds, other.max_tokens_bounds, other.alpha) != (
            self.prompt_bounds,
            self.max_tokens_bounds,
            self.alpha,
        ):
            raise ValueError("OutputLengthModel.merge: buckets or alpha differ")
        self.flush()
        other.flush()
        for key, s in other.summaries.items():
            mine = self.summaries.get(key)
            if mine is None:
                self.summaries[key] = s.copy()
            else:
                mine.merge(s)
        return self

    def empty_like(self) -> OutputLengthModel:
        """A model with this one's settings and no data (a gateway's delta)."""
        return OutputLengthModel(
            alpha=self.alpha,
            min_samples=self.min_samples,
            prompt_bounds=self.prompt_bounds,
            max_tokens_bounds=self.max_tokens_bounds,
        )

    def copy(self) -> OutputLengthModel:
        return self.empty_like().merge(self)

    # ---- prediction ----------------------------------------------------------------
    def predict(
        self, slo_class: str, prompt_tokens: int, max_tokens: int
    ) -> LengthPrediction | None:
        """The request's length distribution from the finest key with at least
        ``min_samples`` completions, capped at ``max_tokens``; None before any key
        has enough. O(1) amortised: a key's quantile grid is cached until it
        learns more."""
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens!r}")
        keys = self.keys(slo_class, prompt_tokens, max_tokens)
        for level, key in zip((3, 2, 1, 0), keys, strict=True):
            s = self.summaries.get(key)
            if s is None or s.n < self.min_samples:
                continue
            grid = self._grid(key, s)
            capped = np.clip(grid, 1.0, float(max_tokens))
            capped.setflags(write=False)
            return LengthPrediction(capped, int(max_tokens), s.n, level, s)
        return None

    def _grid(self, key: Key, s: Summary) -> FloatArray:
        hit = self._cache.get(key)
        if hit is not None and hit[0] == s.n:
            return hit[1]
        grid = s.quantiles(self._qs)
        self._cache[key] = (s.n, grid)
        return grid

    # ---- state ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        self.flush()
        return {
            "alpha": self.alpha,
            "min_samples": self.min_samples,
            "prompt_bounds": list(self.prompt_bounds),
            "max_tokens_bounds": list(self.max_tokens_bounds),
            "summaries": [[k[0], k[1], k[2], s.to_dict()] for k, s in self.summaries.items()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OutputLengthModel:
        """Inverse of ``to_dict``; ``ValueError`` if malformed."""
        try:
            m = cls(
                alpha=float(d["alpha"]),
                min_samples=int(d["min_samples"]),
                prompt_bounds=[int(b) for b in d["prompt_bounds"]],
                max_tokens_bounds=[int(b) for b in d["max_tokens_bounds"]],
            )
            for cls_name, p, b, sd in d["summaries"]:
                m.summaries[(str(cls_name), int(p), int(b))] = Summary.from_dict(sd)
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"OutputLengthModel.from_dict: {exc!r}") from None
        return m

    def __repr__(self) -> str:
        return f"OutputLengthModel(n={self.n}, keys={len(self.summaries)})"


def _check(slo_class: str, prompt_tokens: int, max_tokens: int, output_tokens: float) -> None:
    if not isinstance(slo_class, str):
        raise ValueError(f"slo_class must be a string, got {slo_class!r}")
    if not (isinstance(prompt_tokens, (int, np.integer)) and prompt_tokens >= 0):
        raise ValueError(f"prompt_tokens={prompt_tokens!r}: must be an integer >= 0")
    if not (isinstance(max_tokens, (int, np.integer)) and max_tokens >= 1):
        raise ValueError(f"max_tokens={max_tokens!r}: must be an integer >= 1")
    if not (isinstance(output_tokens, (int, float, np.integer, np.floating))):
        raise ValueError(f"output_tokens={output_tokens!r}: must be a number")
    if not math.isfinite(output_tokens) or output_tokens < 1:
        raise ValueError(f"output_tokens={output_tokens!r}: must be finite and >= 1 token")
    if output_tokens > max_tokens:
        raise ValueError(
            f"output_tokens={output_tokens!r} > max_tokens={max_tokens!r}: the engine caps "
            "an answer at max_tokens, so this record is corrupt"
        )
