"""What simulated clients send as ``max_tokens`` (never the true output length).

A real client does not know how long the answer will be; it sends a cap, and
the engine stops there (an answer longer than the cap is cut: ``finish_reason:
length``). ``ClientMaxTokens`` models that, seeded:

* ``fixed:N`` (default ``fixed:4096``): every client caps at N tokens. A true
  length above N is cut to N (none of the bundled traces exceeds 4,096).
* ``multiple:M[:S]``: a client that knows its task roughly caps at
  ``ceil(M · L · exp(S·z))`` for true length L, z ~ N(0, 1) (default S = 0.5),
  at least 1 token: informative but noisy, and below L (a cut answer) with
  probability Φ(−log M / S) (8 % for M = 2, S = 0.5).

Before issue 14 the simulator sent ``max(4096, true length)``: the cap was
4,096 for every bundled trace, so nothing leaked in practice, but a longer
answer would have told the gateway its own length. ``fixed:4096`` keeps every
result on the bundled traces identical and cuts such answers instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

DEFAULT_SPEC = "fixed:4096"


@dataclass(frozen=True, slots=True)
class ClientMaxTokens:
    """See the module docstring. ``kind`` is ``fixed`` or ``multiple``."""

    kind: str = "fixed"
    cap: int = 4096  # fixed
    multiple: float = 2.0  # multiple
    noise: float = 0.5  # multiple: log-σ

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "multiple"):
            raise ValueError(f"max_tokens model: kind must be fixed or multiple, got {self.kind!r}")
        if self.cap < 1:
            raise ValueError(f"max_tokens model: cap must be >= 1, got {self.cap}")
        if not (math.isfinite(self.multiple) and self.multiple > 0):
            raise ValueError(f"max_tokens model: multiple must be > 0, got {self.multiple}")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"max_tokens model: noise must be >= 0, got {self.noise}")

    @classmethod
    def parse(cls, spec: str) -> ClientMaxTokens:
        """``fixed:N`` or ``multiple:M[:S]``; ``ValueError`` naming the spec."""
        parts = spec.strip().split(":")
        try:
            if parts[0] == "fixed" and len(parts) == 2:
                return cls("fixed", cap=int(parts[1]))
            if parts[0] == "multiple" and len(parts) in (2, 3):
                noise = float(parts[2]) if len(parts) == 3 else 0.5
                return cls("multiple", multiple=float(parts[1]), noise=noise)
        except ValueError as exc:
            raise ValueError(f"--max-tokens {spec!r}: {exc}") from None
        raise ValueError(f"--max-tokens {spec!r}: expected fixed:N or multiple:M[:S]")

    def draw(self, true_tokens: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.int64]:
        """Each request's ``max_tokens`` for true lengths ``true_tokens``."""
        n = np.asarray(true_tokens)
        if self.kind == "fixed":
            return np.full(n.shape, self.cap, dtype=np.int64)
        z = rng.standard_normal(n.shape)
        cap = np.ceil(self.multiple * n * np.exp(self.noise * z))
        out: NDArray[np.int64] = np.maximum(cap, 1).astype(np.int64)
        return out

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.cap}"
        return f"multiple:{self.multiple:g}:{self.noise:g}"
