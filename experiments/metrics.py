"""Per-run metrics of a simulation, from per-request arrays and per-step logs.

Definitions (all latencies in seconds, measured from arrival at the cluster):

* TTFT = first token − arrival; E2E = last token − arrival;
  TPOT = (E2E − TTFT) / (output tokens − 1) per request (requests with one output
  token have no TPOT). ITL quantiles are over every decode token, weighted from the
  engines' step logs (a decode step of duration d with n sequences gives n ITLs of
  ~d; the first token after a preemption is not separated out).
* P50/P90/P99 over completed requests. Rejected requests (admission or engine)
  and deferred ones (the gateway's 429 + Retry-After; the simulated client does
  not retry) count as SLO misses. ``rejected`` and ``deferred`` are disjoint;
  ``shed`` is their sum.
* ``p99_window_cv``: the E2E P99 of each ``window_s`` window of arrivals (windows
  with at least 20 completed requests), then σ(P99) / mean(P99) across windows:
  how predictable the tail is over time.
* ``slo_attainment``: fraction of all requests that met their class's SLO
  (``SloClass.met``: TTFT ≤ ``ttft_s``, TPOT ≤ ``tpot_s``, E2E ≤ ``e2e_s`` when set).
* ``goodput_per_gpu_s``: requests within SLO per GPU-second of the run (span from
  the first arrival to the last completion). The span ends with the slowest
  request, so two policies that meet the SLO for the same requests differ by
  when their last request finished (checked: azure-conv 0.5, every request
  within SLO under three policies, goodput 2.584-2.616 from spans of
  66.8-67.6 s). ``goodput_window_per_gpu_s`` divides by the arrival window
  instead (first to last arrival, the same for every policy on the same
  arrivals): on a fixed workload it ranks policies by the requests they served
  within SLO, which is what a goodput comparison at one offered load asks.
* ``gpu_util``: busy fraction (a step running) over the span, mean over replicas
  (``busy_replica_s``: the busy seconds summed over replicas; ``within_slo``: the
  count behind ``slo_attainment``; ``output_tokens``: of completed requests);
  ``gpu_util_arrivals``: the same busy fraction over the arrival window only
  (first to last arrival; steps still running at the last arrival are left out,
  ≤ one step per replica), so the drain after the last arrival does not dilute
  it and every policy on a trace shares the window. Busy means a step is
  running, whatever its batch (as NVML's GPU utilization);
  ``kv_usage``: time-averaged fraction of KV blocks in use, mean over replicas.
* ``e2e_per_token_var_s2``: the variance (ddof 0, s²) over completed requests of
  E2E / output tokens (s per token), the σ² of Uncertainty Reduction Efficiency
  (``experiments.evaluation.ure``).
* ``prefix_hit_rate``: prompt tokens served from the prefix cache / prompt tokens
  of requests that carried prefix hashes, all replicas (NaN when none did).
* Wasted compute: ``recomputed_tokens`` (tokens computed again after a preemption,
  ``replicas.scheduler``); ``missed_slo_output_tokens`` (output tokens of requests
  that completed but missed their SLO); ``cancelled_output_tokens`` (output tokens
  of requests aborted mid-way; the simulated client never cancels, so 0 there);
  ``wasted_output_frac`` = (missed + cancelled) / all output tokens generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from policies.slo import SloClass

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class RequestLog:
    """Per-request outcomes of one run (arrays of length n; NaN = did not happen)."""

    arrival_s: FloatArray
    first_token_s: FloatArray
    finish_s: FloatArray
    output_tokens: NDArray[np.int64]
    replica: NDArray[np.int64]  # index, -1 = rejected
    preemptions: NDArray[np.int64]


def _q(x: FloatArray, q: float) -> float:
    return float(np.quantile(x, q)) if x.size else float("nan")


def weighted_quantile(values: FloatArray, weights: FloatArray, q: float) -> float:
    if values.size == 0 or weights.sum() <= 0:
        return float("nan")
    order = np.argsort(values, kind="stable")
    cw = np.cumsum(weights[order])
    i = int(np.searchsorted(cw, q * cw[-1], "left"))
    return float(values[order][min(i, values.size - 1)])


def window_p99(log: RequestLog, window_s: float, min_n: int = 20) -> tuple[FloatArray, FloatArray]:
    """(window start s, E2E P99 s) per window of arrivals with >= ``min_n`` completions."""
    done = np.isfinite(log.finish_s)
    t = log.arrival_s[done]
    e2e = (log.finish_s - log.arrival_s)[done]
    if t.size == 0:
        return np.empty(0), np.empty(0)
    w = np.floor((t - t.min()) / window_s).astype(np.int64)
    starts, p99 = [], []
    order = np.argsort(w, kind="stable")
    w, e2e = w[order], e2e[order]
    bounds = np.flatnonzero(np.diff(w)) + 1
    for seg_w, seg in zip(np.split(w, bounds), np.split(e2e, bounds), strict=True):
        if seg.size >= min_n:
            starts.append(float(seg_w[0]) * window_s)
            p99.append(float(np.quantile(seg, 0.99)))
    return np.asarray(starts), np.asarray(p99)


def tail_cv(p99s: FloatArray) -> float:
    """σ(P99) / mean(P99) over windows (population σ): how predictable the tail
    is over time. NaN with fewer than two windows or a non-positive mean."""
    if p99s.size < 2 or not p99s.mean() > 0:
        return float("nan")
    return float(p99s.std() / p99s.mean())


def summarize(
    log: RequestLog,
    *,
    slos: Sequence[SloClass],
    gpus: int,
    busy_s: FloatArray,
    busy_arrivals_s: FloatArray | None = None,
    kv_block_s: FloatArray,
    kv_blocks: FloatArray,
    itl_values: FloatArray,
    itl_weights: FloatArray,
    preemptions: int,
    rejected: int,
    deferred: int = 0,
    slo_index: NDArray[np.int64] | None = None,
    window_s: float = 60.0,
    recomputed_tokens: int = 0,
    cancelled_output_tokens: int = 0,
    prefix_hit_tokens: int = 0,
    prefix_query_tokens: int = 0,
) -> dict[str, Any]:
    """The metrics dict of one run (see module docstring for definitions).
    ``rejected``: refused outright (admission or engine); ``deferred``: refused
    with a Retry-After (not included in ``rejected``).
    ``slo_index[i]``: request i's class in ``slos`` (None: all ``slos[0]``).
    The token counters are the engines' sums (``replicas.scheduler``)."""
    n = log.arrival_s.size
    done = np.isfinite(log.finish_s)
    ttft = (log.first_token_s - log.arrival_s)[done]
    e2e = (log.finish_s - log.arrival_s)[done]
    out = log.output_tokens[done]
    multi = out > 1
    tpot = np.full(ttft.size, 0.0)
    tpot[multi] = (e2e[multi] - ttft[multi]) / (out[multi] - 1)
    if slo_index is None or len(slos) == 1:
        ok = slos[0].met(ttft, tpot, e2e)
    else:
        cls = slo_index[done]
        ok = np.zeros(ttft.size, dtype=bool)
        for c, slo in enumerate(slos):
            m = cls == c
            ok[m] = slo.met(ttft[m], tpot[m], e2e[m])
    good = int(ok.sum())
    span = float(np.nanmax(log.finish_s) - log.arrival_s.min()) if done.any() else 0.0
    _, p99w = window_p99(log, window_s)
    replicas = busy_s.size
    window = float(log.arrival_s.max() - log.arrival_s.min()) if n else 0.0
    util_arrivals = (
        float((busy_arrivals_s / window).mean())
        if busy_arrivals_s is not None and window > 0 and replicas
        else float("nan")
    )
    per_token = e2e / np.maximum(out, 1)
    missed_tokens = int(out[~ok].sum())
    generated = int(out.sum()) + cancelled_output_tokens
    return {
        "requests": int(n),
        "completed": int(done.sum()),
        "rejected": int(rejected),
        "deferred": int(deferred),
        "shed": int(rejected) + int(deferred),
        "ttft_p50_s": _q(ttft, 0.5),
        "ttft_p90_s": _q(ttft, 0.9),
        "ttft_p99_s": _q(ttft, 0.99),
        "tpot_p50_s": _q(tpot[multi], 0.5),
        "tpot_p90_s": _q(tpot[multi], 0.9),
        "tpot_p99_s": _q(tpot[multi], 0.99),
        "itl_p50_s": weighted_quantile(itl_values, itl_weights, 0.5),
        "itl_p99_s": weighted_quantile(itl_values, itl_weights, 0.99),
        "e2e_p50_s": _q(e2e, 0.5),
        "e2e_p90_s": _q(e2e, 0.9),
        "e2e_p99_s": _q(e2e, 0.99),
        "p99_window_cv": tail_cv(p99w),
        "p99_windows": int(p99w.size),
        "slo_attainment": good / n if n else float("nan"),
        "goodput_per_gpu_s": good / (gpus * span) if span > 0 else 0.0,
        "goodput_window_per_gpu_s": good / (gpus * window) if window > 0 else 0.0,
        "gpu_util": float((busy_s / span).mean()) if span > 0 and replicas else 0.0,
        "gpu_util_arrivals": util_arrivals,
        "kv_usage": float((kv_block_s / (kv_blocks * span)).mean()) if span > 0 else 0.0,
        "preemptions": int(preemptions),
        "span_s": span,
        "within_slo": good,
        "output_tokens": int(out.sum()),
        "busy_replica_s": float(busy_s.sum()),
        "e2e_per_token_mean_s": float(per_token.mean()) if per_token.size else float("nan"),
        "e2e_per_token_var_s2": float(per_token.var()) if per_token.size else float("nan"),
        "prefix_hit_rate": (
            prefix_hit_tokens / prefix_query_tokens if prefix_query_tokens else float("nan")
        ),
        "recomputed_tokens": int(recomputed_tokens),
        "missed_slo_output_tokens": missed_tokens,
        "cancelled_output_tokens": int(cancelled_output_tokens),
        "wasted_output_frac": (
            (missed_tokens + cancelled_output_tokens) / generated if generated else 0.0
        ),
    }
