"""What the controller fits the cascade model on, one row per fresh snapshot (pure).

A row is ``(σ_prefill, kv, h, σ_decode)``: the replica's recent σ of prefill-step
durations (s), its KV usage clipped to [0, 1], its batch heterogeneity (>= 1)
and its recent decode ITL σ (s). Snapshots without both recent read-outs, or
with a zero σ, give no row (the log-linear model needs σ > 0). The controller
(``Controller._fit_cascade``) and ``cascade bench cascade-fit`` use this one
function, so the benchmark fits exactly what the controller fits.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from replicas.telemetry import ITL, PREFILL_STEP, ReplicaSnapshot
from uncertainty.validation import FloatArray


def cascade_rows(snapshots: Iterable[ReplicaSnapshot]) -> FloatArray:
    """``(n, 4)`` array of (σ_prefill, kv, h, σ_decode) rows; ``(0, 4)`` when none."""
    rows = []
    for s in snapshots:
        itl, pre = s.recent.get(ITL), s.recent.get(PREFILL_STEP)
        if itl is None or pre is None or itl.std <= 0 or pre.std <= 0:
            continue
        rows.append(
            (pre.std, min(max(s.kv_usage, 0.0), 1.0), max(s.batch.heterogeneity, 1.0), itl.std)
        )
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)
