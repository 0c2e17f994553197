"""The measured serving terms of ``cascade bench fidelity``, from its saved probes.

``calibrate_terms`` runs ``experiments.benchmarks.fidelity_calibrate``'s fits in
the order each needs the ones before (per-step overhead, core sharing, the
serving stack's per-stream cost, the serving overhead), each from its flag, else
its saved probe (``DIR/real/<probe>.json``), else none (0).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from experiments.benchmarks.fidelity_calibrate import (
    fit_contention,
    fit_host_stream_cost,
    fit_streams,
    serving_overhead,
    step_overhead,
    with_serving_costs,
)
from experiments.benchmarks.fidelity_replay import replay_from_result
from experiments.sim_config import SimSetup
from replicas.core_sharing import CoreSharing

__all__ = ["calibrate_terms"]


def calibrate_terms(
    args: argparse.Namespace, real_dir: Path, setup: SimSetup, cfg: Any, shared: bool
) -> tuple[SimSetup, dict[str, Any]]:
    """The measured serving terms (``fidelity_calibrate``), in the order each
    needs the ones before: the per-step overhead, the core-sharing factor, the
    per-stream cost (the stream probe, else the capacity run; with alpha fitted
    again after it), the serving overhead; each from its flag, else its saved
    probe, else none (0).
    Returns the setup with them in place and the summary's fields (value and
    where it came from). Raises ``ValueError`` naming a bad flag."""
    from replicas.vllm_config import engine_cores, pool_device

    def probe(tag: str) -> Any:
        f = real_dir / f"{tag}.json"
        return replay_from_result(json.loads(f.read_text()), str(f)) if f.is_file() else None

    one, two = probe("probe"), probe("probe-c2")
    kw: dict[str, Any] = {"seed": args.sim_seed, "shared_prefix": shared}
    for flag, value in (("--step-overhead-s", args.step_overhead_s),
                        ("--contention-alpha", args.contention_alpha),
                        ("--per-stream", args.per_stream)):  # fmt: skip
        if value is not None and not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{flag} must be a finite number >= 0, got {value}")
    if args.step_overhead_s is not None:
        step, step_from = float(args.step_overhead_s), "--step-overhead-s"
    elif one is None:
        step, step_from = 0.0, "none (no probe.json)"
    else:
        raw = step_overhead(setup, one, cfg, **kw)
        step, step_from = max(raw, 0.0), f"probe ({len(one)} requests one at a time)"
        if raw < 0:
            step_from += f"; clamped from {raw * 1e3:.3f} ms"
    cpu, own = pool_device(cfg.pools[0]) == "cpu", engine_cores(cfg.pools[0]) > 0
    model = args.core_model if args.core_model != "auto" else "host" if cpu and own else "linear"
    if model == "host":
        return _host_terms(args, real_dir, setup, cfg, (step, step_from), one, probe, kw)
    # on CPU vLLM gives every engine of the pool the same OpenMP binding (on a
    # 2-core host: core 0), so the pool's engines share cores, unless each claims
    # its own (cpu_threads_bind: distinct); on GPU each has its own device
    group = args.engines_per_group
    if group is None:
        group = setup.pools[0].replicas if cpu and not own else 1
    if group < 1:
        raise ValueError(f"--engines-per-group must be >= 1, got {group}")
    setup = with_serving_costs(setup, step_overhead_s=step)
    if args.contention_alpha is not None:
        alpha, alpha_from = float(args.contention_alpha), "--contention-alpha"
    elif group < 2:
        alpha, alpha_from = 0.0, "none (no engines share cores)"
    elif two is None:
        alpha, alpha_from = 0.0, "none (no probe-c2.json)"
    else:
        alpha, note = fit_contention(setup, two, cfg, engines_per_group=group, **kw)
        alpha_from = f"contention probe ({len(two)} requests two at a time): {note}"
    setup = with_serving_costs(setup, step_overhead_s=step, sharing=CoreSharing(group, alpha))
    cap, what = _stream_probe(probe)
    if args.per_stream is not None:
        per_stream, stream_from = float(args.per_stream), "--per-stream"
    elif cap is None:
        per_stream, stream_from = 0.0, "none (no probe-streams.json or capacity.json)"
    else:
        per_stream, alpha, stream_from, alpha_note = fit_streams(
            setup, cap, two if args.contention_alpha is None else None, cfg, what=what, **kw
        )
        alpha_from += alpha_note
    sharing = CoreSharing(group, alpha, per_stream)
    setup = with_serving_costs(setup, step_overhead_s=step, sharing=sharing)
    return setup, {
        **_overhead(args, setup, one, cfg, kw), "core_model": "linear",
        "step_overhead_s": step, "step_overhead_from": step_from,
        "contention_alpha": alpha, "contention_from": alpha_from, "engines_per_group": group,
        "per_stream": per_stream, "per_stream_from": stream_from,
    }  # fmt: skip


STREAM_PROBE = "stream probe"


def _stream_probe(probe: Callable[[str], Any]) -> tuple[Any, str]:
    """The stream probe (half the pool's batch slots at a time) if it was sent,
    else the capacity probe (all at once), and its name (None: neither)."""
    streams = probe("probe-streams")
    return (streams, STREAM_PROBE) if streams is not None else (probe("capacity"), "capacity probe")


def _overhead(
    args: argparse.Namespace, setup: SimSetup, one: Any, cfg: Any, kw: dict[str, Any]
) -> dict[str, Any]:
    """Term 4 (the serving overhead) with every step term of ``setup`` in place."""
    if args.overhead_s is not None:
        return {"overhead_s": float(args.overhead_s), "overhead_from": "--overhead-s"}
    if one is None:
        return {"overhead_s": 0.0, "overhead_from": "none (no probe.json)"}
    return {"overhead_s": serving_overhead(setup, one, cfg, **kw),
            "overhead_from": f"probe ({len(one)} requests one at a time)"}  # fmt: skip


def _host_terms(
    args: argparse.Namespace, real_dir: Path, setup: SimSetup, cfg: Any,
    step_term: tuple[float, str], one: Any, probe: Callable[[str], Any], kw: dict[str, Any],
) -> tuple[SimSetup, dict[str, Any]]:  # fmt: skip
    """The host model's terms (``replicas.core_sharing``, ``--core-model host``):
    every engine of the run in one group (the host), its cores (``--host-cores``,
    else the real run's, else this machine's), ``stream_cost`` fitted to the
    stream probe (else the capacity run); the step overhead fitted again with it
    in place, then ``stream_cost`` once more; then the serving overhead."""
    step, step_from = step_term
    meta = real_dir / "meta.json"
    info = json.loads(meta.read_text()) if meta.is_file() else {}
    cores = args.host_cores or info.get("host_cores") or os.cpu_count() or 1
    if cores < 1:
        raise ValueError(f"--host-cores must be >= 1, got {cores}")
    base = CoreSharing(sum(p.replicas for p in setup.pools), 0.0, host_cores=int(cores))
    # the stream probe's steady state (after its opening burst of `concurrency`
    # requests started together), else the capacity run (all at once) whole
    cap, what = _stream_probe(probe)
    skip = int(info.get("stream_probe_concurrency") or 0) if what == STREAM_PROBE else 0
    skip = skip if cap is not None and skip < len(cap) else 0
    kw_skip = {**kw, "skip": skip}
    k, k_from = 0.0, "none (no probe-streams.json or capacity.json)"
    if cap is not None:
        for again in (False, True):
            with_host = with_serving_costs(setup, step_overhead_s=step, sharing=base)
            k, note = fit_host_stream_cost(with_host, cap, cfg, **kw_skip)
            if again or one is None or args.step_overhead_s is not None:
                break
            raw = step_overhead(replace(with_host, core_sharing=replace(base, stream_cost=k)),
                                one, cfg, **kw)  # fmt: skip
            step = max(raw, 0.0)
            step_from += f"; again with the host model in place: {raw * 1e3:.3f} ms"
        after = f", the {len(cap) - skip} after its first {skip}" if skip else ""
        k_from = f"{what} ({len(cap)} requests{after}): {note}"
    setup = with_serving_costs(setup, step_overhead_s=step, sharing=replace(base, stream_cost=k))
    return setup, {
        **_overhead(args, setup, one, cfg, kw), "core_model": "host",
        "step_overhead_s": step, "step_overhead_from": step_from,
        "contention_alpha": 0.0, "contention_from": "none (the host model)",
        "engines_per_group": base.engines_per_group, "per_stream": 0.0,
        "per_stream_from": "none (the host model)", "host_cores": base.host_cores,
        "stream_cost": k, "stream_cost_from": k_from,
    }  # fmt: skip
