"""How sure an interleaved A/B's ratios are: a bootstrap over its rounds.

An interleaved A/B (``cascade bench ab --interleave K``) drives every system in
K short rounds (ABBA). On a shared 2-core host a round now and then meets a
stall of a second or two (seen in both systems' rounds alike), and a pooled P99
over ~1,000 requests is the ~10th largest latency: one stalled round decides
it. So next to each pooled ratio the A/B reports:

* ``ci95``: a 95 % percentile-bootstrap interval of the pooled ratio, resampling
  *rounds* (pairs: round k of both systems together, since they share the
  round's slice of the workload and its time on the host) with replacement;
* ``rounds_lower``: in how many rounds the first system's own quantile was
  lower than the second's (a paired sign count: K/2 when they are equal).

Pure numpy; ``seed`` makes the interval reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.benchmarks.ab_data import latency_samples
from experiments.benchmarks.ab_pair import CASCADE

__all__ = ["ROUND_METRICS", "round_rows", "round_stats"]

# (row key, samples key, quantile): what the bars are stated on
ROUND_METRICS = (
    ("ttft_p50_s", "ttft", 50.0),
    ("ttft_p99_s", "ttft", 99.0),
    ("e2e_p50_s", "e2e", 50.0),
    ("e2e_p99_s", "e2e", 99.0),
)


def round_stats(
    a_rounds: Sequence[Mapping[str, Any]],
    b_rounds: Sequence[Mapping[str, Any]],
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per ``ROUND_METRICS`` key: ``ratio`` (a / b, pooled over all rounds),
    ``ci95`` ([lo, hi] of the round bootstrap) and ``rounds_lower`` (rounds
    where a's quantile < b's). ``a_rounds[k]`` and ``b_rounds[k]`` are the two
    systems' client results of round k. Raises ``ValueError`` if the round
    counts differ or are < 2, or a round has no successful request."""
    if len(a_rounds) != len(b_rounds) or len(a_rounds) < 2:
        raise ValueError(
            f"round_stats: needs >= 2 paired rounds, got {len(a_rounds)} and {len(b_rounds)}"
        )
    a = [latency_samples(r) for r in a_rounds]
    b = [latency_samples(r) for r in b_rounds]
    for name, rounds in (("a", a), ("b", b)):
        empty = [k for k, s in enumerate(rounds) if s["e2e"].size == 0]
        if empty:
            raise ValueError(
                f"round_stats: system {name} has no successful request in round(s) {empty}"
            )
    rng = np.random.default_rng(seed)
    k = len(a)
    draws = rng.integers(0, k, size=(n_boot, k))
    out: dict[str, dict[str, Any]] = {}
    for key, field, q in ROUND_METRICS:
        sa = [s[field] for s in a]
        sb = [s[field] for s in b]
        pooled = _q(sa, range(k), q) / _q(sb, range(k), q)
        boot = np.array([_q(sa, idx, q) / _q(sb, idx, q) for idx in draws])
        lo, hi = np.percentile(boot, [2.5, 97.5])
        lower = sum(np.percentile(x, q) < np.percentile(y, q) for x, y in zip(sa, sb, strict=True))
        out[key] = {
            "ratio": round(float(pooled), 4),
            "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "rounds_lower": int(lower),
            "rounds": k,
        }
    return out


def _q(rounds: Sequence[np.ndarray], idx: Any, q: float) -> float:
    return float(np.percentile(np.concatenate([rounds[i] for i in idx]), q))


def round_rows(
    results: Mapping[str, Sequence[Mapping[str, Any]]], rate: float, seed: int
) -> list[dict[str, Any]]:
    """The ``round_stats`` rows of one offered rate of an interleaved A/B: Cascade
    vs each stock router (``results``: system -> its rounds' client results);
    none with fewer than 2 rounds or without Cascade."""
    if CASCADE not in results or len(results[CASCADE]) < 2:
        return []
    return [
        {
            "round_stats": f"{CASCADE}/{s}",
            "rate": rate,
            **round_stats(results[CASCADE], results[s], seed=seed),
        }
        for s in results
        if s.startswith("stock-")
    ]
