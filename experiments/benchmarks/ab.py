"""A/B on real replicas: stock Ray Serve LLM vs Cascade, same replicas, same client.

``cascade bench ab --config C --trace T --rate R [--burstiness B] [--requests N]
[--routers pow2,prefix,capacity] [--against-config B | --telemetry-off]
[--interleave K] [--stock-bind BIND] --json``

For each stock router named in ``--routers`` (Ray's default power-of-two,
``PrefixCacheAffinityRouter``, the experimental ``CapacityQueueRouter``), and then
for Cascade:

1. start a fresh local Ray head (``--num-cpus`` logical CPUs, the pools' custom
   resources), exactly as ``cascade up`` does;
2. deploy: stock = ``build_openai_app`` with the *same* ``LLMConfig`` as the
   Cascade config's first pool (engine settings, replica count, placement);
   Cascade = ``cascade up --config C``;
3. drive it with ``vllm bench serve``'s own code (``ab_data``): the trace's first
   N requests, prompts scaled, outputs capped, Gamma arrivals at ``--rate`` with
   ``--burstiness`` and ``--seed`` (the same arrivals for every system);
4. tear everything down (``cascade down``: Serve, the controller, Ray).

Prints one JSON row per system (served req/s, output tok/s, TTFT/TPOT/ITL/E2E
P50/P90/P99 in s, completed/failed), then one ``ratios`` row (Cascade / each
stock router, and / the best stock router by served req/s), and writes the
latency CDF plot and the raw client results under ``--out``. Progress (the
client's progress bar and the phase) goes to stderr.

``--against-config B`` adds Cascade under a second config (``--config`` is the
baseline A, B the variant; ``experiments.benchmarks.ab_pair``): both must run the
same pool (replicas, model, engine settings; only routing, admission, SLOs,
loops and the model's scheduling keys such as ``prefill_budget`` may differ),
else it refuses, naming each differing key. Rows are labelled by the file stems
and a ``B/A`` ratios row follows. ``--telemetry-off`` is the same comparison with
B = ``--config`` and A = the same with ``loops.telemetry: false`` (replicas
neither time tokens nor push snapshots): its ``telemetry on/off`` row is the
full-stack cost of Cascade's telemetry (run it above capacity, where served
req/s is the capacity). ``cpu_s``: CPU seconds per Ray/vLLM process role during
the load (every process on the host: run it on an otherwise idle machine).

``--interleave K`` (K >= 2) deploys every system side by side on one Ray cluster
(Cascade at ``/``, stock router R at ``/stock-R``) and drives them one at a time
in K alternating rounds (ABBA) of N / K requests, then merges each system's
rounds: on a shared host whose speed drifts by 10-30 % over minutes, one system
after the other compares the host's moments as much as the systems; interleaved,
the drift falls on both (the idle system's background work runs during the
other's rounds, both ways). ``round_stats`` rows (``ab_rounds``) give each
Cascade/stock ratio's 95 % round-bootstrap interval and paired round counts.
Two Cascade configs (``--against-config`` or ``--telemetry-off``) cannot share a
Ray cluster (one controller each), so ``--interleave K`` then redeploys one of
them per round (ABBA, A first, no stock router): ~2 × K start-ups.

Needs vLLM (``engine: vllm``); each system costs its start-up plus N / R s of load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from experiments.benchmarks.ab_capacity import auto_share, check_auto, measured_rate
from experiments.benchmarks.ab_data import (
    BENCH_SERVE,
    Workload,
    client_args,
    latency_samples,
    merge_results,
    ratios,
    summarize,
    workload_rows,
    write_cdf_plot,
    write_workload,
)
from experiments.benchmarks.ab_pair import (
    CASCADE,
    ConfigPair,
    config_pair,
    load_cascade_config,
)
from experiments.benchmarks.ab_rounds import round_rows
from experiments.benchmarks.ab_systems_cli import (
    PORT,
    cpu_delta,
    deploy_cascade,
    deploy_stock,
    ray_cpu_seconds,
)
from experiments.cli_values import positive_floats

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "ab-cpu.yaml"
STOCK_ROUTERS = ("pow2", "prefix", "capacity")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="Cascade YAML (engine vllm)")
    parser.add_argument("--trace", default="azure-conv", help="trace short name or path")
    parser.add_argument(
        "--rate",
        required=True,
        help="offered load (req/s); a comma-separated list runs each rate on one deployment; "
        "auto[:F] (with --interleave): F (default 0.8) of stock Ray's capacity measured here",
    )
    parser.add_argument("--burstiness", type=float, default=1.0, help="Gamma shape (1: Poisson)")
    parser.add_argument("--requests", type=int, default=200, help="requests per system")
    routers = ",".join(STOCK_ROUTERS)
    parser.add_argument("--routers", default="pow2", help=f"stock routers: {routers}")
    parser.add_argument("--prompt-scale", type=float, default=1 / 8)
    parser.add_argument("--max-output", type=int, default=128, help="output tokens cap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the Ray head")
    parser.add_argument("--timeout", type=float, default=900.0, help="deploy timeout (s)")
    parser.add_argument("--skip-cascade", action="store_true", help="only the stock routers")
    parser.add_argument("--stock-bind", default=None, metavar="BIND", help="stock replicas' "
                        "VLLM_CPU_OMP_THREADS_BIND (e.g. nobind; default: the pool's, else vLLM's)")
    parser.add_argument(
        "--telemetry-off", action="store_true",
        help="also run Cascade with loops.telemetry false (full-stack telemetry overhead); "
        "the same comparison as --against-config, with the second config derived",
    )
    parser.add_argument(
        "--against-config", default=None, metavar="B.yaml",
        help="also run Cascade under this second config on the same pool (same pools, model "
        "and engine settings; routing, admission, SLOs, loops, model.prefill_budget, "
        "model.first_chunk may differ) and add a B/A ratios row; rows are labelled by the "
        "file names",
    )
    parser.add_argument(
        "--interleave", type=int, default=1,
        help="K >= 2: deploy every system side by side on one Ray cluster and drive them "
        "in K alternating rounds (ABBA...) of requests/K each, so the host's drift falls "
        "on every system alike (with --against-config or --telemetry-off: the two Cascade "
        "configs, one redeployed per round, no stock router); 1 (default): one system at "
        "a time",
    )
    parser.add_argument("--out", default="out/ab", help="plots and raw results")


def parse_routers(text: str) -> list[str]:
    names = [r.strip() for r in text.split(",") if r.strip()]
    bad = [r for r in names if r not in STOCK_ROUTERS]
    if bad:
        raise ValueError(f"--routers: unknown {bad}; choose from {', '.join(STOCK_ROUTERS)}")
    return names


def _log(msg: str) -> None:
    print(f"[bench ab] {msg}", file=sys.stderr, flush=True)


def parse_rates(text: str) -> list[float]:
    """``--rate``: one or more positive req/s, comma-separated."""
    return positive_floats(text, "--rate")


def drive_client(args: argparse.Namespace, system: str, rate: float, model: str,
                 tokenizer: str, data: Path, out: Path, *, route: str = "",
                 n: int | None = None, seed: int | None = None, tag: str | None = None,
                 max_concurrency: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Send ``n`` (default ``args.requests``) requests of the workload file
    ``data`` to the app at ``route`` with ``vllm bench serve`` (``client_args``;
    ``args.burstiness``, seed default ``args.seed``); returns its result JSON
    (saved as ``out/<tag>.json``, per-request detail included) plus ``cpu_s``,
    the Ray/vLLM CPU seconds per role during the load. Raises ``RuntimeError``
    when the client fails."""
    tag = tag or f"{system}-r{rate:g}"
    n = args.requests if n is None else n
    result_file = f"{tag}.json"
    cmd = [sys.executable, "-c", BENCH_SERVE, *client_args(
        base_url=f"http://127.0.0.1:{PORT}{route}", model=model, tokenizer=tokenizer,
        dataset=data, n=n, rate=rate, burstiness=args.burstiness,
        seed=args.seed if seed is None else seed, result_dir=out, result_file=result_file,
        max_concurrency=max_concurrency,
    )]  # fmt: skip
    _log(f"{tag}: {n} requests at {rate:g} req/s (vllm bench serve)")
    before = ray_cpu_seconds()
    # the client's progress bar goes straight to our stderr; its report to a log
    with (out / f"{tag}.client.log").open("w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=sys.stderr, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{system}: vllm bench serve exited {proc.returncode}")
    result: dict[str, Any] = json.loads((out / result_file).read_text())
    result["cpu_s"] = cpu_delta(before, ray_cpu_seconds())
    return result


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    # stdout carries only the JSON rows: `cascade up` prints its URL there, and
    # Ray's driver prints raylet messages
    with contextlib.redirect_stdout(sys.stderr):
        return _run(args)


def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from orchestrator import serve_cli
    from orchestrator.traces import load_trace
    from replicas.vllm_config import tiny_model_dir

    routers = parse_routers(args.routers)
    share = auto_share(args.rate)  # --rate auto: a share of stock's capacity, measured
    rates = parse_rates(args.rate) if share is None else check_auto(args)
    cfg = load_cascade_config("--config", str(args.config))
    if cfg.model.engine != "vllm":
        raise ValueError(f"{args.config}: bench ab compares real engines; needs model.engine vllm")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # before the workload and any deploy: a bad second config stops the run here
    pair = config_pair(str(args.config), cfg, against=args.against_config,
                       telemetry_off=args.telemetry_off, out=out)  # fmt: skip
    w = Workload(args.trace, args.requests, args.prompt_scale, args.max_output)
    data = write_workload(workload_rows(load_trace(args.trace), w), out / "workload.jsonl")
    tokenizer = str(tiny_model_dir(cfg.model, cfg.pools[0]))
    configs = pair.configs if pair is not None else {CASCADE: str(args.config)}
    systems = [f"stock-{r}" for r in routers] + ([] if args.skip_cascade else list(configs))
    if args.interleave > 1 and pair is not None:
        return _run_alternating(args, cfg, pair, rates, load_trace(args.trace), tokenizer, out)
    if args.interleave > 1:
        return _run_interleaved(args, cfg, routers, rates, load_trace(args.trace), tokenizer, out)
    rows: list[dict[str, Any]] = []
    samples: dict[float, dict[str, Any]] = {r: {} for r in rates}
    serve_cli.run_down(argparse.Namespace())  # from no Ray at all
    for i, system in enumerate(systems, 1):
        _log(f"[{i}/{len(systems)}] {system}: deploying")
        t0 = time.time()
        try:
            if system in configs:
                deploy_cascade(configs[system], args.num_cpus, args.timeout)
            else:
                deploy_stock(cfg, system.removeprefix("stock-"), args.num_cpus, args.timeout,
                             bind=args.stock_bind)
            _log(f"{system}: ready in {time.time() - t0:.0f} s")
            for rate in rates:
                result = drive_client(args, system, rate, cfg.model.name, tokenizer, data, out)
                row = summarize(system, result)
                row.update(rate=rate, burstiness=args.burstiness, trace=args.trace)
                row["cpu_s"] = result["cpu_s"]
                rows.append(row)
                samples[rate][system] = latency_samples(result)
        except Exception as exc:  # one failing system must not lose the others' rows
            _log(f"{system}: FAILED: {exc}")
            rows.append({"system": system, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            serve_cli.run_down(argparse.Namespace())
    return _finish(rows, samples, rates, out, pair)


def _finish(rows: list[dict[str, Any]], samples: dict[float, dict[str, Any]], rates: list[float],
            out: Path, pair: ConfigPair | None) -> list[dict[str, Any]]:  # fmt: skip
    for rate in rates:
        rows.extend(_ratio_rows([r for r in rows if r.get("rate") == rate], rate, pair))
        if samples[rate]:
            plot = write_cdf_plot(samples[rate], out / f"ab_latency_cdf_r{rate:g}.png")
            _log(f"CDF plot: {plot}")
    return rows


def _run_interleaved(args: argparse.Namespace, cfg: Any, routers: list[str], rates: list[float],
                     trace: Any, tokenizer: str, out: Path) -> list[dict[str, Any]]:  # fmt: skip
    """Every system deployed at once (Cascade at ``/``, stock router R as app
    ``stock-R`` at ``/stock-R``), driven one at a time in ``K`` rounds per rate;
    round k sends slice k of the workload (``requests // K`` requests, arrival
    seed ``seed + k``) to each system, in reversed order on odd rounds (ABBA),
    so a drift in the host's speed weighs on every system alike. Each system's
    rounds are merged into one row (``merge_results``)."""
    from orchestrator import serve_cli

    k_rounds = args.interleave
    per_round, files = _round_workloads(args, trace, out)
    systems = [f"stock-{r}" for r in routers] + ([] if args.skip_cascade else [CASCADE])
    routes = {s: "" if s == CASCADE else f"/{s}" for s in systems}
    serve_cli.run_down(argparse.Namespace())
    rows: list[dict[str, Any]] = []
    samples: dict[float, dict[str, Any]] = {r: {} for r in rates}
    try:
        for system in systems:  # Cascade first: `cascade up` starts the Ray head
            _log(f"{system}: deploying (side by side)")
            t0 = time.time()
            if system == CASCADE:
                deploy_cascade(str(args.config), args.num_cpus, args.timeout)
            else:
                deploy_stock(cfg, system.removeprefix("stock-"), args.num_cpus, args.timeout,
                             app_name=system, route_prefix=routes[system],
                             bind=args.stock_bind)  # fmt: skip
            _log(f"{system}: ready in {time.time() - t0:.0f} s")
        if not rates:  # --rate auto: a share of the first stock router's measured capacity
            rates = [measured_rate(drive_client, args, cfg.model.name, tokenizer, out,
                                   systems[0], routes[systems[0]], _log)]  # fmt: skip
            samples = {r: {} for r in rates}
        for rate in rates:
            results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
            for k in range(k_rounds):
                for system in systems if k % 2 == 0 else systems[::-1]:
                    results[system].append(drive_client(
                        args, system, rate, cfg.model.name, tokenizer, files[k], out,
                        route=routes[system], n=per_round, seed=args.seed + k,
                        tag=f"{system}-r{rate:g}-k{k}",
                    ))  # fmt: skip
            for system in systems:
                rows.append(_merged_row(system, results[system], rate, args))
                samples[rate][system] = latency_samples(merge_results(results[system]))
            rows.extend(round_rows(results, rate, args.seed))
    finally:
        serve_cli.run_down(argparse.Namespace())
    return _finish(rows, samples, rates, out, None)


def _round_workloads(args: argparse.Namespace, trace: Any, out: Path) -> tuple[int, list[Path]]:
    """``--interleave K``: the workload cut into K slices of ``requests // K``
    (one per round, the same slices for every system): (per round, files)."""
    k_rounds = args.interleave
    per_round = args.requests // k_rounds
    if per_round < 1:
        raise ValueError(f"--requests {args.requests} < --interleave {k_rounds}")
    w = Workload(args.trace, per_round * k_rounds, args.prompt_scale, args.max_output)
    all_rows = workload_rows(trace, w)
    files = [write_workload(all_rows[k * per_round:(k + 1) * per_round],
                            out / f"workload-k{k}.jsonl") for k in range(k_rounds)]  # fmt: skip
    return per_round, files


def _merged_row(system: str, results: list[dict[str, Any]], rate: float,
                args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """One system's rounds at one rate as one row, CPU summed by role."""
    row = summarize(system, merge_results(results))
    row.update(rate=rate, burstiness=args.burstiness, trace=args.trace, rounds=len(results))
    cpu: dict[str, float] = {}
    for res in results:
        for role, sec in res["cpu_s"].items():
            cpu[role] = round(cpu.get(role, 0.0) + sec, 2)
    row["cpu_s"] = cpu
    return row


def _run_alternating(args: argparse.Namespace, cfg: Any, pair: ConfigPair,
                     rates: list[float], trace: Any, tokenizer: str,
                     out: Path) -> list[dict[str, Any]]:  # fmt: skip
    """``--against-config`` / ``--telemetry-off`` with ``--interleave K``: two
    Cascade configs cannot run side by side (one controller per Ray cluster), so
    each round deploys one, drives slice k of the workload at every rate (the
    same slice and arrival seed for both), and tears it down; the order
    alternates ABBA (A first), so the host's drift weighs on both alike. Stock
    routers are not run (``--routers`` is ignored): this measures the configs'
    difference, on the whole Serve stack. Rows are labelled ``pair.labels``."""
    from orchestrator import serve_cli

    k_rounds = args.interleave
    per_round, files = _round_workloads(args, trace, out)
    systems = list(pair.labels)
    configs = pair.configs
    results: dict[tuple[str, float], list[dict[str, Any]]] = {}
    samples: dict[float, dict[str, Any]] = {r: {} for r in rates}
    serve_cli.run_down(argparse.Namespace())
    try:
        for k in range(k_rounds):
            for system in systems if k % 2 == 0 else systems[::-1]:
                _log(f"round {k + 1}/{k_rounds}: {system}: deploying")
                t0 = time.time()
                deploy_cascade(configs[system], args.num_cpus, args.timeout)
                _log(f"{system}: ready in {time.time() - t0:.0f} s")
                try:
                    for rate in rates:
                        results.setdefault((system, rate), []).append(drive_client(
                            args, system, rate, cfg.model.name, tokenizer, files[k], out,
                            n=per_round, seed=args.seed + k, tag=f"{system}-r{rate:g}-k{k}",
                        ))  # fmt: skip
                finally:
                    serve_cli.run_down(argparse.Namespace())
    finally:
        serve_cli.run_down(argparse.Namespace())
    rows = [_merged_row(s, results[(s, r)], r, args) for r in rates for s in systems]
    for r in rates:
        for s in systems:
            samples[r][s] = latency_samples(merge_results(results[(s, r)]))
    return _finish(rows, samples, rates, out, pair)


def _ratio_rows(rows: list[dict[str, Any]], rate: float,
                pair: ConfigPair | None) -> list[dict[str, Any]]:  # fmt: skip
    """For the rows of one offered rate: the pair's variant / baseline (named
    ``pair.ratio_name``), and ``--config``'s Cascade / stock (each router, and
    the best by served req/s)."""
    ok = {r["system"]: r for r in rows if "system" in r and "error" not in r}
    out: list[dict[str, Any]] = []
    if pair is not None and pair.label_a in ok and pair.label_b in ok:
        out.append({"ratios": pair.ratio_name, "rate": rate,
                    **ratios(ok[pair.label_b], ok[pair.label_a])})  # fmt: skip
    # the system deployed from --config itself
    main = CASCADE if pair is None or CASCADE in pair.labels else pair.label_a
    stock = [s for s in ok if s.startswith("stock-")]
    if main in ok and stock:
        per = {s: ratios(ok[main], ok[s]) for s in stock}
        best = max(stock, key=lambda s: ok[s]["served_req_s"])
        out.append({"ratios": "cascade/stock", "rate": rate, "best_stock": best,
                    "best": per[best], "per_router": per})  # fmt: skip
    return out
