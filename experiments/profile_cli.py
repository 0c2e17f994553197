"""Measure a local engine's step time over a grid of batch shapes; write a profile CSV.

For each grid point (prefill tokens P, decode sequences B, KV length K) the engine
first runs B requests with K-token prompts until they all decode, then adds one
request with a P-token prompt, and times ``engine.step()``: the step that carries
the prefill is a mixed step (P prefill tokens + B decodes); with P = 0 every step
is a pure decode step. Each point is repeated ``--repeats`` times.

Output (``--out``): CSV, one row per grid point, times in **ms** as in the vidur
profiles: ``prefill_tokens, decode_seqs, kv_len, time_stats.step.{min,max,mean,median,std}``.
``replicas.perf_model.FittedPerfModel.from_csv`` fits it, and a pool's
``engine_overrides: {profile: FILE}`` makes the simulator use it.

Engines: ``--engine vllm`` (real vLLM; CPU build with a tiny dummy-weight model
here, any model on a GPU machine; imported lazily, only by this command) and
``--engine sim`` (the simulator's own engine model: a self-check of the pipeline).
``--small`` uses a 3×3×2 grid (a minute on vLLM-CPU) instead of the full one.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FULL_GRID = ((0, 128, 512, 2048), (1, 8, 32, 128), (128, 1024, 4096))
SMALL_GRID = ((0, 64, 256), (1, 4, 16), (64, 256))
COLUMNS = ["prefill_tokens", "decode_seqs", "kv_len"] + [
    f"time_stats.step.{s}" for s in ("min", "max", "mean", "median", "std")
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=("vllm", "sim"), default="vllm")
    parser.add_argument("--model", default=None, help="vLLM model path (a dir with config.json)")
    parser.add_argument("--out", required=True, help="CSV file to write")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="small grid (quick calibration)")
    parser.add_argument("--sim-model", default="llama-2-7b", help="--engine sim: profile model")
    parser.add_argument("--sim-gpu", default="a100", help="--engine sim: GPU")
    parser.add_argument(
        "--max-model-len", type=int, default=None, help="default: the model's own limit"
    )
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.15)


StepFn = Callable[[int, int, int], float]  # (prefill, decodes, kv) -> one mixed step (s)


def _sim_stepper(args: argparse.Namespace) -> StepFn:
    import numpy as np

    from replicas.perf_model import ProfiledPerfModel, StepShape

    pm = ProfiledPerfModel.load(args.sim_model, args.sim_gpu, 1)
    rng = np.random.default_rng(0)

    def step(p: int, b: int, kv: int) -> float:
        shape = StepShape(p + b, 1 if p else 0, p, p * p / 2.0, b, b * kv)
        return pm.sample(shape, rng)

    return step


def _vllm_stepper(args: argparse.Namespace) -> StepFn:  # pragma: no cover - needs vllm
    if not args.model:
        raise ValueError("--model is required with --engine vllm")
    from vllm import EngineArgs, LLMEngine, SamplingParams

    engine = LLMEngine.from_engine_args(
        EngineArgs(
            model=args.model, load_format="dummy", enforce_eager=True,
            max_model_len=args.max_model_len, gpu_memory_utilization=args.gpu_memory_utilization,
            enable_prefix_caching=False,
        )
    )  # fmt: skip
    counter = iter(range(1 << 62))

    def add(n_prompt: int, max_tokens: int) -> str:
        rid = f"p{next(counter)}"
        limit = engine.model_config.max_model_len  # decoders run long, never past the limit
        params = SamplingParams(
            max_tokens=max(1, min(max_tokens, limit - n_prompt)), ignore_eos=True
        )
        prompt: Any = {"prompt_token_ids": [7 + (i % 100) for i in range(n_prompt)]}
        engine.add_request(rid, prompt, params)
        return rid

    def step(p: int, b: int, kv: int) -> float:
        for _ in range(b):
            add(kv, 1 << 12)
        # warm: prefill the decoders (may take several chunked steps)
        for _ in range(64):
            engine.step()
        if p:
            add(p, 1)
        t0 = time.perf_counter()
        engine.step()
        dt = time.perf_counter() - t0
        for rid in list(getattr(engine, "get_request_ids", lambda: [])()):
            engine.abort_request([rid])
        while engine.has_unfinished_requests():
            engine.abort_request([f"p{i}" for i in range(next(counter))])
            engine.step()
        return dt

    return step


def measure(step: StepFn, grid: tuple[tuple[int, ...], ...], repeats: int) -> list[dict[str, Any]]:
    """Time ``step`` at each grid point ``repeats`` times; rows in ms."""
    rows = []
    for p in grid[0]:
        for b in grid[1]:
            for kv in grid[2]:
                if p == 0 and b == 0:
                    continue
                xs = [step(p, b, kv) * 1e3 for _ in range(repeats)]
                rows.append({
                    "prefill_tokens": p, "decode_seqs": b, "kv_len": kv,
                    "time_stats.step.min": min(xs), "time_stats.step.max": max(xs),
                    "time_stats.step.mean": statistics.fmean(xs),
                    "time_stats.step.median": statistics.median(xs),
                    "time_stats.step.std": statistics.pstdev(xs),
                })  # fmt: skip
    return rows


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    step = _sim_stepper(args) if args.engine == "sim" else _vllm_stepper(args)
    rows = measure(step, SMALL_GRID if args.small else FULL_GRID, args.repeats)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    from replicas.perf_model import FittedPerfModel

    fit = FittedPerfModel.from_csv(out)
    print(f"wrote {out}: {len(rows)} points; fit coef={fit.coef} cv={fit.cv:.3f}", file=sys.stderr)
    return 0
