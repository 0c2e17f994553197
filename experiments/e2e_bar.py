"""Issue 14's E2E P99 bar checked against the E2E floor (``experiments.e2e_floor``).

The bar: the ``cascade`` stack's E2E P99 ≤ ``BAR_FACTOR`` × the best (lowest)
E2E P99 of the ``BAR_BASELINES`` on the same arrivals. ``bar_fields`` says
whether that target lies above the floor's P99 (``bar_reachable``); when it does
not, no policy that completes every request can meet it. ``policy_floor_fields``
describes one policy's tail against the floor: the requests at or above its E2E
P99, how much of their E2E came before the first token, and how far above their
own floors they finished.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments.e2e_floor import E2EFloor
from experiments.metrics import RequestLog

BAR_BASELINES = ("pow2", "least_outstanding", "kv_usage", "prefix_cache", "dynamo_cost")
BAR_FACTOR = 0.8
TAIL_Q = 0.99


def policy_floor_fields(log: RequestLog, floor: E2EFloor) -> dict[str, float]:
    """One policy's run against the floor (NaN where no request completed):

    * ``e2e_below_floor``: share of completed requests whose E2E is below their
      floor (only the engines' step-time noise can do that; see the floor's module),
      ``e2e_min_floor_ratio``: the smallest E2E ÷ floor;
    * ``e2e_tail_ttft_share``: over the requests with E2E ≥ the run's E2E P99,
      Σ TTFT / Σ E2E (the rest, 1 − it, is decode: (n − 1) × TPOT);
    * ``e2e_tail_output_tokens``: their median output length;
    * ``e2e_tail_floor_ratio``: their median E2E ÷ floor;
    * ``e2e_tail_tpot_s`` / ``e2e_tail_floor_tpot_s``: their median TPOT, as run
      and alone (batch 1), over those with more than one output token.
    """
    if log.arrival_s.size != floor.seconds.size:
        raise ValueError(
            f"policy_floor_fields: {log.arrival_s.size} requests logged, "
            f"{floor.seconds.size} floors"
        )
    done = np.isfinite(log.finish_s) & np.isfinite(floor.seconds)
    nan = math.nan
    if not done.any():
        return dict.fromkeys(
            ("e2e_below_floor", "e2e_min_floor_ratio", "e2e_tail_ttft_share",
             "e2e_tail_output_tokens", "e2e_tail_floor_ratio", "e2e_tail_tpot_s",
             "e2e_tail_floor_tpot_s"), nan,
        )  # fmt: skip
    e2e = (log.finish_s - log.arrival_s)[done]
    ttft = (log.first_token_s - log.arrival_s)[done]
    fl = floor.seconds[done]
    tail = e2e >= np.quantile(e2e, TAIL_Q)
    out = log.output_tokens[done]
    multi = tail & (out > 1)  # TPOT needs a second token
    steps = out[multi] - 1.0
    tpot = (e2e - ttft)[multi] / steps
    tpot_alone = (fl - floor.ttft_s[done])[multi] / steps
    return {
        "e2e_below_floor": float(np.mean(e2e < fl)),
        "e2e_min_floor_ratio": float(np.min(e2e / fl)),
        "e2e_tail_ttft_share": float(ttft[tail].sum() / e2e[tail].sum()),
        "e2e_tail_output_tokens": float(np.median(out[tail])),
        "e2e_tail_floor_ratio": float(np.median(e2e[tail] / fl[tail])),
        "e2e_tail_tpot_s": float(np.median(tpot)) if tpot.size else nan,
        "e2e_tail_floor_tpot_s": float(np.median(tpot_alone)) if tpot.size else nan,
    }


def bar_fields(rows: Sequence[dict[str, Any]], floor: E2EFloor) -> dict[str, Any]:
    """The bar of one run from its policies' metrics rows (``policy``,
    ``e2e_p99_s``): the best baseline, its E2E P99, the target (``BAR_FACTOR`` ×),
    floor P99 ÷ best, and ``bar_reachable`` (floor P99 ≤ target). All None when
    no baseline of ``BAR_BASELINES`` ran (policy names match with - or _)."""
    best: tuple[float, str] | None = None
    for r in rows:
        name = str(r.get("policy", "")).replace("-", "_")
        p99 = r.get("e2e_p99_s")
        if name not in BAR_BASELINES or not isinstance(p99, float) or not math.isfinite(p99):
            continue
        if best is None or p99 < best[0]:
            best = (p99, name)
    if best is None:
        return dict.fromkeys(
            ("bar_best_baseline", "bar_best_e2e_p99_s", "bar_target_e2e_p99_s",
             "bar_floor_ratio", "bar_reachable"),
        )  # fmt: skip
    fp99 = floor.quantile(TAIL_Q)
    target = BAR_FACTOR * best[0]
    return {
        "bar_best_baseline": best[1],
        "bar_best_e2e_p99_s": best[0],
        "bar_target_e2e_p99_s": target,
        "bar_floor_ratio": fp99 / best[0],
        "bar_reachable": bool(fp99 <= target) if math.isfinite(fp99) else None,
    }
