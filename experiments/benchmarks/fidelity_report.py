"""The pure report of ``cascade bench fidelity``: per-request latencies of the
real run and of the simulator's replay, their quantiles, the relative errors and
the bars (no Ray, no vLLM, no simulator).

Error of a quantile: ``(sim - real) / real`` (signed; > 0: the simulator is
slower). The bars (issue 15 §4; Vidur reports < 9 % on means, llm-d's BLIS P99
within 9.2 %): ``|err|`` ≤ 5 % at P50 and ≤ 10 % at P99 for each of TTFT, TPOT
and E2E; P90 is reported without a bar. Quantiles are ``np.percentile``'s
(linear), as ``vllm bench serve`` computes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

METRICS = ("ttft", "tpot", "e2e")
QUANTILES = (50, 90, 99)
BARS: dict[int, float] = {50: 0.05, 99: 0.10}  # quantile -> max |relative error|


@dataclass(frozen=True)
class LatencySamples:
    """Per-request latencies (s) of one run, aligned by request: ``ttft``, ``e2e``,
    and ``tpot`` = (E2E − TTFT) / (output − 1), NaN for one-token outputs (as
    ``vllm bench serve``, which leaves them out of TPOT) and for requests that
    did not finish. Raises ``ValueError`` if the arrays differ in length."""

    ttft: NDArray[np.float64]
    tpot: NDArray[np.float64]
    e2e: NDArray[np.float64]

    def __post_init__(self) -> None:
        if not (self.ttft.shape == self.tpot.shape == self.e2e.shape):
            raise ValueError(
                f"latency samples: lengths differ (ttft {self.ttft.shape}, "
                f"tpot {self.tpot.shape}, e2e {self.e2e.shape})"
            )

    @classmethod
    def from_times(
        cls, ttft_s: Sequence[float] | NDArray[Any], e2e_s: Sequence[float] | NDArray[Any],
        output_tokens: Sequence[int] | NDArray[Any],
    ) -> LatencySamples:  # fmt: skip
        """Samples from per-request TTFT, E2E (s) and output lengths (tokens)."""
        ttft = np.asarray(ttft_s, dtype=np.float64)
        e2e = np.asarray(e2e_s, dtype=np.float64)
        out = np.asarray(output_tokens, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            tpot = np.where(out > 1, (e2e - ttft) / (out - 1), np.nan)
        return cls(ttft, tpot, e2e)

    def metric(self, name: str) -> NDArray[np.float64]:
        """The finite samples of ``name`` (one of ``METRICS``)."""
        if name not in METRICS:
            raise ValueError(f"latency samples: unknown metric {name!r}; known: {METRICS}")
        x: NDArray[np.float64] = getattr(self, name)
        finite: NDArray[np.float64] = x[np.isfinite(x)]
        return finite


def quantiles(x: NDArray[np.float64]) -> dict[int, float | None]:
    """P50/P90/P99 of ``x`` (None when empty)."""
    if x.size == 0:
        return dict.fromkeys(QUANTILES)
    return {q: float(np.percentile(x, q)) for q in QUANTILES}


def rel_error(sim: float | None, real: float | None) -> float | None:
    """``(sim - real) / real``; None when either is missing or ``real`` is not > 0."""
    if sim is None or real is None or not real > 0 or not math.isfinite(sim):
        return None
    return (sim - real) / real


def compare(real: LatencySamples, sim: LatencySamples) -> list[dict[str, Any]]:
    """One row per metric: ``real_p50_s``, ``sim_p50_s``, ``err_p50`` (and P90,
    P99), ``p50_ok`` / ``p99_ok`` (the bars; False when an error is undefined),
    and the sample counts ``n_real`` / ``n_sim``."""
    rows = []
    for name in METRICS:
        r, s = real.metric(name), sim.metric(name)
        qr, qs = quantiles(r), quantiles(s)
        row: dict[str, Any] = {"metric": name, "n_real": int(r.size), "n_sim": int(s.size)}
        for q in QUANTILES:
            err = rel_error(qs[q], qr[q])
            row[f"real_p{q}_s"] = qr[q]
            row[f"sim_p{q}_s"] = qs[q]
            row[f"err_p{q}"] = err
            if q in BARS:
                row[f"p{q}_ok"] = err is not None and abs(err) <= BARS[q]
        rows.append(row)
    return rows


def bars_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How many of the rows' bars hold: ``bars_met`` / ``bars_total``, ``all_met``,
    and the worst ``|err|`` at each barred quantile."""
    met = total = 0
    worst: dict[str, float | None] = {}
    for q in BARS:
        errs = [abs(r[f"err_p{q}"]) for r in rows if r.get(f"err_p{q}") is not None]
        worst[f"worst_abs_err_p{q}"] = max(errs) if errs else None
        for r in rows:
            total += 1
            met += bool(r.get(f"p{q}_ok"))
    return {"bars_met": met, "bars_total": total, "all_met": total > 0 and met == total, **worst}


def write_cdf_plot(real: LatencySamples, sim: LatencySamples, path: Path, title: str) -> Path:
    """Real vs simulated CDFs of TTFT, TPOT and E2E (one panel each, log x), PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, name in zip(axes, METRICS, strict=True):
        for label, samples, style in (("real vLLM", real, "-"), ("simulator", sim, "--")):
            x = np.sort(samples.metric(name))
            if x.size:
                ax.plot(x, np.arange(1, x.size + 1) / x.size, style, label=f"{label} (n={x.size})")
        ax.set_xscale("log")
        ax.set_xlabel(f"{name.upper()} (s)")
        ax.set_ylabel("CDF")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
