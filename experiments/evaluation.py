"""The figures of ``cascade evaluate`` computed across runs: URE, its baseline,
and where the telemetry-overhead figure comes from.

Uncertainty Reduction Efficiency (per load)::

    URE = (σ²_baseline − σ²_cascade) / overhead%

σ² is the variance over completed requests of E2E / output tokens
(``experiments.metrics``: ``e2e_per_token_var_s2``, s²/token²; reports print it in
ms²/token²); ``overhead%`` is the telemetry's cost in percent of throughput. The
baseline is, by default, the baseline policy with the *lowest* σ² at that load
(the hardest comparison), or one named policy. A positive URE: Cascade removed
variance, per percent of overhead paid; negative: the baseline had less.

Goodput on a common span (``on_common_span``): the simulator's
``goodput_per_gpu_s`` divides by each run's own span (first arrival to last
completion), so at one load a policy with one late straggler reads lower.
``cascade evaluate`` compares policies over the same span, the longest at that
load: ``goodput_common_per_gpu_s`` = requests within SLO / (GPUs × span), and
``tokens_common_per_gpu_s`` = output tokens served / (GPUs × span).
Utilization needs no such step: ``gpu_util_arrivals`` (``experiments.metrics``)
is measured over the arrival window, the same for every policy.

The overhead figure is never invented: it is given (``--overhead-pct``), read from
the JSON of ``cascade bench overhead --json`` (``recorder_cpu_share``), or read from
the "Telemetry overhead" table recorded in ``docs/benchmarks.md`` (the largest
``recorder_cpu_share`` there). ``recorder_cpu_share`` is the noise-free bound the
benchmark reports (the recorder's calls replayed without the engine ÷ round time);
the measured on/off throughput ratio is within that machine's noise.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CASCADE = "cascade"
BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
_SHARE_ROW = re.compile(r"^\|\s*`recorder_cpu_share`.*$", re.MULTILINE)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")


@dataclass(frozen=True)
class OverheadFigure:
    """Telemetry overhead in percent of throughput, and where the number is from."""

    pct: float
    source: str

    def __post_init__(self) -> None:
        if not (math.isfinite(self.pct) and self.pct > 0):
            raise ValueError(
                f"overhead from {self.source}: must be a percentage > 0, got {self.pct}"
            )


def overhead_from_benchmarks_md(path: Path = BENCHMARKS_MD) -> OverheadFigure:
    """The largest ``recorder_cpu_share`` (a percentage) in the table row of
    ``path``; ``ValueError`` naming the file when the row or a value is missing."""
    if not path.exists():
        raise ValueError(f"{path}: not found (give --overhead-pct or --overhead-json)")
    row = _SHARE_ROW.search(path.read_text())
    values = [float(v) for v in _PERCENT.findall(row.group(0))] if row else []
    if not values:
        raise ValueError(f"{path}: no `recorder_cpu_share` row with a value in %")
    return OverheadFigure(max(values), f"{path.name}, `recorder_cpu_share` (largest recorded)")


def overhead_from_bench_json(path: Path) -> OverheadFigure:
    """``recorder_cpu_share`` × 100 from ``cascade bench overhead --json`` output
    (one JSON object per line; the largest when several)."""
    if not path.exists():
        raise ValueError(f"--overhead-json {path}: not found")
    shares = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            shares.append(float(json.loads(line)["recorder_cpu_share"]) * 100.0)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not an overhead bench row ({exc!r})") from None
    if not shares:
        raise ValueError(f"{path}: empty")
    return OverheadFigure(max(shares), f"{path.name} (cascade bench overhead, recorder_cpu_share)")


def ure(var_baseline: float, var_cascade: float, overhead_pct: float) -> float:
    """(σ²_baseline − σ²_cascade) / overhead% (units of σ² per percent); NaN when
    either variance is missing. ``ValueError`` for an overhead that is not > 0."""
    if not (math.isfinite(overhead_pct) and overhead_pct > 0):
        raise ValueError(f"URE: overhead% must be > 0, got {overhead_pct}")
    if not (math.isfinite(var_baseline) and math.isfinite(var_cascade)):
        return float("nan")
    return (var_baseline - var_cascade) / overhead_pct


def pick_baseline(variances: Mapping[str, float], fixed: str | None = None) -> str | None:
    """The baseline for URE among ``variances`` (policy → σ²): ``fixed`` when given
    (``ValueError`` if it did not run), else the non-Cascade policy with the least
    finite σ² (ties: the first); None when there is none."""
    if fixed is not None:
        if fixed == CASCADE:
            raise ValueError("--baseline: Cascade cannot be its own baseline")
        if fixed not in variances:
            raise ValueError(f"--baseline {fixed!r} is not among the policies run")
        return fixed
    best: str | None = None
    for name, var in variances.items():
        if name == CASCADE or var is None or not math.isfinite(var):
            continue
        if best is None or var < variances[best]:
            best = name
    return best


@dataclass(frozen=True)
class UreRow:
    """URE at one load (σ² in s²/token²)."""

    load: float
    baseline: str | None
    var_baseline: float
    var_cascade: float
    overhead_pct: float
    ure: float


def ure_by_load(
    rows: Sequence[Mapping[str, Any]], overhead: OverheadFigure, baseline: str | None = None
) -> list[UreRow]:
    """One ``UreRow`` per load of ``rows`` (results.jsonl rows: ``load``, ``policy``,
    ``e2e_per_token_var_s2``), in order of load; empty when Cascade did not run."""
    by_load: dict[float, dict[str, float]] = {}
    for r in rows:
        var = r.get("e2e_per_token_var_s2")
        by_load.setdefault(float(r["load"]), {})[str(r["policy"])] = (
            float("nan") if var is None else float(var)
        )
    out = []
    for load in sorted(by_load):
        variances = by_load[load]
        if CASCADE not in variances:
            continue
        name = pick_baseline(variances, baseline)
        vb = variances[name] if name is not None else float("nan")
        vc = variances[CASCADE]
        out.append(UreRow(load, name, vb, vc, overhead.pct, ure(vb, vc, overhead.pct)))
    return out


def on_common_span(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with ``common_span_s``, ``goodput_common_per_gpu_s`` and
    ``tokens_common_per_gpu_s`` added
    (module docstring): per load, the span is the longest ``span_s`` of the runs
    at that load."""
    longest: dict[float, float] = {}
    for r in rows:
        load = float(r["load"])
        longest[load] = max(longest.get(load, 0.0), float(r.get("span_s") or 0.0))
    out = []
    for r in rows:
        span = longest[float(r["load"])]
        ok = span > 0
        out.append({
            **r,
            "common_span_s": span,
            "goodput_common_per_gpu_s": r["within_slo"] / (r["gpus"] * span) if ok else 0.0,
            "tokens_common_per_gpu_s": r["output_tokens"] / (r["gpus"] * span) if ok else 0.0,
        })  # fmt: skip
    return out
