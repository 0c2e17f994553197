"""``report.md`` of ``cascade evaluate``: tables from the results.jsonl rows, URE,
the plots, the definitions, and the commit and command that produced it.

Rendering only: every number is a metric of ``experiments.metrics`` or a URE of
``experiments.evaluation``; a null (did not happen) prints as "–".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.evaluation import CASCADE, OverheadFigure, ure_by_load

Row = Mapping[str, Any]


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return format(float(v) * scale, spec)


def _table(rows: Sequence[Row], cols: Sequence[tuple[str, Callable[[Row], str]]]) -> list[str]:
    lines = ["| " + " | ".join(t for t, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f(r) for _, f in cols) + " |")
    return lines


def _col(key: str, spec: str, scale: float = 1.0) -> Callable[[Row], str]:
    return lambda r: _fmt(r.get(key), spec, scale)


def _name(r: Row) -> str:
    return f"**{r['policy']}**" if r["policy"] == CASCADE else str(r["policy"])


def _cov(metric: str, level: str, key: str = "coverage") -> Callable[[Row], str]:
    def f(r: Row) -> str:
        cov = r.get(key) or {}
        return _fmt((cov.get(metric) or {}).get(level), ".1%")

    return f


LOAD = ("load", _col("load", "g"))
POLICY = ("policy", _name)

HEADLINE = (
    LOAD, POLICY,
    ("TTFT P99 ms", _col("ttft_p99_s", ".0f", 1e3)),
    ("TPOT P99 ms", _col("tpot_p99_s", ".1f", 1e3)),
    ("E2E P99 s", _col("e2e_p99_s", ".2f")), ("tail σ/μ", _col("p99_window_cv", ".3f")),
    ("SLO", _col("slo_attainment", ".1%")),
    ("goodput /GPU·s", _col("goodput_common_per_gpu_s", ".2f")),
    ("GPU util", _col("gpu_util_arrivals", ".1%")),
    ("tok/s /GPU", _col("tokens_common_per_gpu_s", ".0f")),
    ("σ² E2E/tok ms²", _col("e2e_per_token_var_s2", ".3g", 1e6)),
    ("rejected / deferred", lambda r: f"{r.get('rejected', 0)} / {r.get('deferred', 0)}"),
)  # fmt: skip

QUANTILES = (
    LOAD, POLICY,
    *(
        (f"{m.upper()} P{q} {u}", _col(f"{m}_p{q}_s", spec, scale))
        for m, u, spec, scale in (("ttft", "ms", ".0f", 1e3), ("tpot", "ms", ".1f", 1e3),
                                  ("e2e", "s", ".2f", 1.0))
        for q in (50, 90, 99)
    ),
)  # fmt: skip

WASTE = (
    LOAD, POLICY,
    ("prefix-cache hit", _col("prefix_hit_rate", ".1%")), ("KV usage", _col("kv_usage", ".1%")),
    ("preemptions", _col("preemptions", ".0f")),
    ("recomputed tokens", _col("recomputed_tokens", ".0f")),
    ("output tokens, missed SLO", _col("missed_slo_output_tokens", ".0f")),
    ("output tokens, cancelled", _col("cancelled_output_tokens", ".0f")),
    ("wasted output share", _col("wasted_output_frac", ".1%")),
)  # fmt: skip

COVERAGE = (
    LOAD, POLICY,
    ("E2E >P50", _cov("e2e", "p50")), ("E2E >P90", _cov("e2e", "p90")),
    ("E2E >P99", _cov("e2e", "p99")), ("TTFT >P99", _cov("ttft", "p99")),
    ("TPOT >P99", _cov("tpot", "p99")),
    ("naive E2E >P99", _cov("e2e", "p99", "coverage_naive")),
)  # fmt: skip


def _ure_lines(rows: Sequence[Row], overhead: OverheadFigure, baseline: str | None) -> list[str]:
    ures = ure_by_load(rows, overhead, baseline)
    rule = (
        f"the fixed baseline `{baseline}`"
        if baseline
        else "at each load, the baseline policy with the least σ² (the hardest comparison)"
    )
    lines = [
        "URE = (σ²_baseline − σ²_cascade) / overhead%, σ² = variance over completed "
        "requests of E2E / output tokens. Baseline: " + rule + ". "
        f"overhead% = {overhead.pct:g} % from {overhead.source}: the telemetry's cost "
        "only (the controller and gateway run off the token path).",
        "",
    ]
    if not ures:
        return [*lines, "Not computed: the `cascade` policy was not run."]
    lines += [
        "| load | baseline | σ²_baseline ms²/tok² | σ²_cascade ms²/tok² | overhead % "
        "| URE (ms²/tok² per %) |",
        "|---|---|---|---|---|---|",
    ]
    for u in ures:
        lines.append(
            f"| {u.load:g} | {u.baseline or '–'} | {_fmt(u.var_baseline, '.4g', 1e6)} | "
            f"{_fmt(u.var_cascade, '.4g', 1e6)} | {u.overhead_pct:g} | {_fmt(u.ure, '.4g', 1e6)} |"
        )
    return lines


def write_report(
    rows: Sequence[Row],
    out_dir: Path,
    *,
    overhead: OverheadFigure,
    baseline: str | None,
    commit: str,
    command: str,
    plots: Sequence[str],
    setup: Any,
    top_load: float,
) -> Path:
    """Write ``out_dir/report.md`` from ``rows`` (results.jsonl rows, in run order)."""
    r0 = rows[0] if rows else {}
    pools = ", ".join(f"{p.replicas}× {p.accelerator} ({p.name}, {p.model})" for p in setup.pools)
    slos = "; ".join(
        f"`{c.name}`: "
        + ", ".join(f"{k} ≤ {v:g} s" for k, v in (("TTFT", c.ttft_s), ("TPOT", c.tpot_s),
                                                   ("E2E", c.e2e_s)) if v is not None)
        + (f" (prompts ≤ {c.max_prompt_tokens} tokens)" if c.max_prompt_tokens else "")
        for c in setup.slos.classes
    )  # fmt: skip
    window = r0.get("window_s")
    lines = [
        f"# Cascade evaluation: `{r0.get('trace')}`",
        "",
        f"- commit: `{commit}`",
        f"- command: `{command}`",
        f"- written: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- cluster: {pools}; {r0.get('gpus')} GPUs; measured capacity "
        f"{_fmt(r0.get('capacity_rps'), '.1f')} req/s on this trace's mix",
        f"- each load: the first {_fmt(r0.get('duration_s'), 'g')} s of the trace scaled to "
        f"load × capacity; seed {r0.get('seed')}; clients send max_tokens `{r0.get('max_tokens')}`",
        f"- SLOs: {slos}; a rejected or deferred request is a miss",
        "- GPU util: the share of time a step runs (any batch), mean over replicas, "
        "from the first to the last arrival; goodput (requests within SLO) and tok/s "
        "(output tokens served) per GPU-second of the load's common span (its longest "
        "run, first arrival to last completion)",
        f"- tail predictability: σ(P99)/mean(P99) of E2E over {_fmt(window, 'g')} s windows of "
        "arrivals with ≥ 20 completions each",
        "",
        "## Headline",
        "",
        *_table(rows, HEADLINE),
        "",
        "![latency vs load](latency_vs_load.png)",
        "![SLO, goodput, tail, waste vs load](slo_goodput_vs_load.png)",
        "",
        "## Uncertainty Reduction Efficiency",
        "",
        *_ure_lines(rows, overhead, baseline),
        "",
        "## Utilization vs latency variance",
        "",
        "Each curve runs over the loads (GPU utilization and σ² as above; output tokens "
        "served per GPU-second over the load's common span). Busy time saturates early "
        "under continuous batching (a step with any batch is busy), hence the second "
        "axis. Lower right is better: more work per GPU at less variance. Numbers: the "
        "headline table.",
        "",
        "![utilization vs variance](util_vs_variance.png)",
        "",
        "## Latency quantiles",
        "",
        *_table(rows, QUANTILES),
        "",
        "## KV cache and wasted compute",
        "",
        "Recomputed tokens: computed again after a preemption discarded their KV. "
        "Output tokens of requests that completed but missed their SLO, and of "
        "cancelled requests (the simulated client never cancels: 0 here), are wasted.",
        "",
        *_table(rows, WASTE),
        "",
        "## Calibration coverage",
        "",
        "Share of completed requests above the gateway's issued quantile for the chosen "
        "replica (target: 50 % / 10 % / 1 % above P50 / P90 / P99); `naive`: the "
        "pool's empirical quantiles so far (docs/uncertainty.md, Calibration).",
        "",
        *_table(rows, COVERAGE),
        "",
        f"## Other plots (load {top_load:g})",
        "",
        *(f"![{p}]({p})" for p in plots if p.startswith(("latency_cdf", "p99_over"))),
        "",
        "Definitions: `experiments/metrics.py` (per run), `experiments/evaluation.py` (URE).",
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
