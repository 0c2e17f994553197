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

``--config FILE`` (with ``--engine vllm``) profiles the engine exactly as that
Cascade config deploys it: the model source and the engine arguments of its pool
(``--pool``, default the first) as ``replicas.vllm_config.llm_config_kwargs``
builds them for Ray Serve LLM (on CPU: the KV fraction, block size rounded to 32,
float32, eager mode; ``max_num_seqs``, ``max_num_batched_tokens``,
``max_model_len``), plus the pool's ``cpu_threads_bind``. Prefix caching is
always off while profiling: the grid repeats one prompt, and a cache hit would
time a step that skipped its prefill.
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
    parser.add_argument(
        "--gpu-memory-utilization", type=float, default=None, help="default 0.15 (no --config)"
    )
    parser.add_argument(
        "--config", default=None, help="--engine vllm: engine settings of this Cascade config"
    )
    parser.add_argument("--pool", default=None, help="--config: which pool (default: the first)")


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


def vllm_engine_args(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``vllm.EngineArgs`` keywords and the environment of the profiled
    engine. With ``args.config``: the pool's deployed engine (module docstring;
    ``--model`` / ``--max-model-len`` / ``--gpu-memory-utilization`` still win when
    given). Without: ``--model`` with dummy weights and eager mode. Raises
    ``ValueError`` naming the option (no model, an unknown pool, a config whose
    engine is not vllm)."""
    env: dict[str, str] = {}
    if args.config:
        from orchestrator.config import load_config
        from replicas.vllm_config import llm_config_kwargs

        cfg = load_config(args.config)
        if cfg.model.engine != "vllm":
            raise ValueError(f"--config {args.config}: model.engine must be vllm to profile it")
        pools = [p for p in cfg.pools if args.pool in (None, p.name)]
        if not pools:
            names = ", ".join(p.name for p in cfg.pools)
            raise ValueError(f"--pool {args.pool!r}: not in {args.config} (pools: {names})")
        # --model given: no tiny model is generated for the config's shape
        model_dir = Path(args.model) if args.model else None
        built = llm_config_kwargs(cfg.model, pools[0], model_dir=model_dir)
        kw: dict[str, Any] = {
            "model": built["model_loading_config"]["model_source"],
            **built["engine_kwargs"],
        }
        # built without prefill_tpot_s: vLLM's own scheduler (the step cost of a
        # batch shape does not depend on who chose it)
        env = dict(built.get("runtime_env", {}).get("env_vars", {}))
    else:
        if not args.model:
            raise ValueError("--model (or --config) is required with --engine vllm")
        kw = {"load_format": "dummy", "enforce_eager": True, "gpu_memory_utilization": 0.15}
    if args.model:
        kw["model"] = args.model
    if args.max_model_len is not None:
        kw["max_model_len"] = args.max_model_len
    if args.gpu_memory_utilization is not None:
        kw["gpu_memory_utilization"] = args.gpu_memory_utilization
    kw["enable_prefix_caching"] = False
    return kw, env


def _vllm_stepper(args: argparse.Namespace) -> StepFn:  # pragma: no cover - needs vllm
    import os

    kw, env = vllm_engine_args(args)
    os.environ.update(env)  # read by vLLM's CPU worker when it starts
    from vllm import EngineArgs, LLMEngine, SamplingParams

    print(f"profiling vLLM with {kw}", file=sys.stderr)
    engine = LLMEngine.from_engine_args(EngineArgs(**kw))
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
