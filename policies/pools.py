"""Cross-pool split: pick the pool for a request class, then the replica.

The controller's ``Plan`` holds routing weights per request class and pool
(e.g. ``{"interactive": {"h100": 0.8, "a100": 0.2}}``). ``PoolSplitter`` draws a
pool from the class's weights; the gateway (``orchestrator.gateway``) then holds
or spills, admits, and ranks that pool's replicas with an ordinary ``Router``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import numpy as np

PoolWeights = Mapping[str, float]
ClassWeights = Mapping[str, Mapping[str, float]]


class PoolSplitter:
    """Draws a pool for a request class.

    ``choose_pool(slo_class, weights, rng, available)``: ``weights`` is either
    the whole plan (class → pool → weight) or one class's pool → weight. Pools
    not in ``available`` (pool → capacity, e.g. replicas up) or with capacity 0
    are dropped. When the class has no usable weight (unknown class, all zero,
    all dropped), the draw is proportional to ``available`` instead.

    Raises ``ValueError`` when there is nothing to choose from, or for a
    negative or non-finite weight.
    """

    def choose_pool(
        self,
        slo_class: str,
        weights: ClassWeights | PoolWeights | None,
        rng: np.random.Generator,
        available: Mapping[str, float] | None = None,
    ) -> str:
        per_pool = _class_weights(slo_class, weights)
        names = list(per_pool)
        w = np.array([per_pool[p] for p in names], dtype=np.float64)
        if w.size and not (np.isfinite(w).all() and (w >= 0).all()):
            raise ValueError(
                f"pool weights for class {slo_class!r} must be finite and >= 0: {per_pool}"
            )
        if available is not None:
            w = w * np.array([float(available.get(p, 0.0) > 0) for p in names])
        if w.size == 0 or w.sum() <= 0:
            if not available:
                raise ValueError(
                    f"no pool to route class {slo_class!r} to (no weights, none available)"
                )
            names = sorted(available)
            w = np.array([max(float(available[p]), 0.0) for p in names])
            if w.sum() <= 0:
                raise ValueError(f"no pool to route class {slo_class!r} to (no capacity available)")
        if len(names) == 1:
            return names[0]
        return names[int(rng.choice(len(names), p=w / w.sum()))]


def _class_weights(slo_class: str, weights: ClassWeights | PoolWeights | None) -> PoolWeights:
    if not weights:
        return {}
    first = next(iter(weights.values()))
    if isinstance(first, Mapping):
        nested = cast(ClassWeights, weights)
        return nested.get(slo_class) or nested.get("default") or {}
    return cast(PoolWeights, weights)
