"""The simulator's side of ``cascade bench fidelity``: the requests a real client
run sent, replayed through the DES with the engine settings vLLM ran with.

* ``replay_from_result``: the requests of one ``vllm bench serve`` result file
  (``--save-detailed``): each request's send time (``start_times``, seconds on
  the client's ``perf_counter``), prompt tokens as the client counted them
  (``input_lens``), output tokens it received (``output_lens``, exact with
  ``--ignore-eos``), and its measured TTFT and E2E. Failed requests are left
  out (counted in ``dropped``): they put no decode work on the engines.
* ``sim_setup``: one pool of the config's replica count on the measured
  profile, with vLLM's engine settings mapped one by one (``EngineMapping``).
* ``simulate_replay``: the replay through ``experiments.simulator.simulate``
  under the config's gateway (the ``cascade`` stack: router profile,
  admission, controller), every client's ``max_tokens`` = its output length
  (what ``vllm bench serve`` sends), TTFT/TPOT/E2E per request.

What the engine profile cannot see (the serving path's costs, engines sharing
cores) is measured from probes by ``experiments.benchmarks.fidelity_calibrate``.

Prefix caching. The workload's prompts are ``orchestrator.loadgen.prompt_text``:
one word cycle, so every prompt is a prefix of every longer one, and vLLM's
prefix cache (on by default) serves the leading full blocks of a prompt that a
longer or equal one already computed on that replica. The replay gives request
i the prefix hashes ``0, 1, ..., prompt_i // block_size - 1`` with one hash per
KV block (``prefix_unit_tokens = block_size``), so the simulated cache hits
exactly those blocks (and, as vLLM, recomputes at least the last prompt token).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from experiments.benchmarks.fidelity_report import LatencySamples
from experiments.client import ClientMaxTokens
from experiments.sim_config import SimSetup, setup_from_config
from orchestrator.traces import Trace

# what vllm bench serve sends: max_tokens = the request's output length
EXACT_MAX_TOKENS = ClientMaxTokens("multiple", multiple=1.0, noise=0.0)
_RESULT_LISTS = ("start_times", "input_lens", "output_lens", "ttfts", "latencies")

# vLLM engine arguments and how the simulated engine takes them; any other
# argument in the deployed engine's kwargs is reported as not modelled
MODELLED = {
    "max_num_seqs": "max_num_seqs",
    "max_num_batched_tokens": "max_num_batched_tokens (one budget for prefill chunks and decodes)",
    "max_model_len": "max_model_len (longer requests are refused, as vLLM does)",
    "block_size": "block_size (and one prefix hash per block)",
    "gpu_memory_utilization": "num_blocks (KV fraction of memory / bytes per block)",
    "enable_prefix_caching": "prefix hashes of the shared-prefix prompts (off: none)",
    "scheduler_cls": "prefill_tpot_slo_s (model.prefill_budget: slo_slack)",
}
# settings whose effect on step time the profile measured (the same engine)
IN_PROFILE = ("load_format", "enforce_eager", "dtype", "tensor_parallel_size")


@dataclass(frozen=True)
class Replay:
    """The requests one client run sent (successful ones), by send time."""

    arrival_s: NDArray[np.float64]  # from the first send
    prompt_tokens: NDArray[np.int64]
    output_tokens: NDArray[np.int64]
    real: LatencySamples  # what the client measured, same order
    dropped: int  # failed requests left out
    source: str

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    def trace(self, block_size: int, *, shared_prefix: bool) -> Trace:
        """The replay as a simulator ``Trace``; ``shared_prefix``: one prefix hash
        per full block of each prompt (module docstring), else none."""
        hashes: tuple[tuple[int, ...], ...] = ()
        if shared_prefix:
            hashes = tuple(tuple(range(int(p) // block_size)) for p in self.prompt_tokens)
        return Trace(
            name=f"replay:{self.source}", arrival_s=self.arrival_s,
            prompt_tokens=self.prompt_tokens, output_tokens=self.output_tokens,
            hashes=hashes, prefix_unit_tokens=block_size,
        )  # fmt: skip


def replay_from_result(result: Mapping[str, Any], source: str = "<result>") -> Replay:
    """The ``Replay`` of one ``vllm bench serve`` result (module docstring).
    Raises ``ValueError`` naming ``source`` and the field when a per-request list
    is missing (run without ``--save-detailed``), the lists differ in length, or
    no request succeeded."""
    lists: dict[str, list[Any]] = {}
    for key in _RESULT_LISTS:
        value = result.get(key)
        if not isinstance(value, list):
            raise ValueError(
                f"{source}: no per-request {key!r} (was vllm bench serve run with --save-detailed?)"
            )
        lists[key] = value
    n = len(lists["start_times"])
    bad = [k for k, v in lists.items() if len(v) != n]
    if bad:
        raise ValueError(f"{source}: per-request lists {bad} differ in length from start_times")
    errors = result.get("errors") or [""] * n
    keep = [
        i for i in range(n)
        if not (i < len(errors) and errors[i]) and int(lists["output_lens"][i] or 0) >= 1
    ]  # fmt: skip
    if not keep:
        raise ValueError(f"{source}: no successful request to replay")
    start = np.array([float(lists["start_times"][i]) for i in keep])
    order = np.argsort(start, kind="stable")
    idx = [keep[j] for j in order]

    def col(key: str, dtype: type) -> NDArray[Any]:
        return np.array([lists[key][i] for i in idx], dtype=dtype)

    prompts = col("input_lens", np.int64)
    if np.any(prompts < 1):
        raise ValueError(f"{source}: input_lens must be >= 1 token")
    outs = col("output_lens", np.int64)
    sent = col("start_times", np.float64)
    return Replay(
        arrival_s=sent - sent[0], prompt_tokens=prompts, output_tokens=outs,
        real=LatencySamples.from_times(col("ttfts", np.float64), col("latencies", np.float64),
                                       outs),
        dropped=n - len(keep), source=source,
    )  # fmt: skip


@dataclass(frozen=True)
class EngineMapping:
    """How the deployed vLLM engine's settings reached the simulated one:
    ``settings`` (simulated name -> value), ``unmodelled`` (vLLM arguments the
    simulator ignores: state them next to any figure)."""

    settings: dict[str, Any]
    unmodelled: tuple[str, ...]


def cpu_kv_blocks(
    memory_bytes: float, fraction: float, *, layers: int, kv_heads: int, head_dim: int,
    dtype_bytes: int, block_size: int,
) -> int:  # fmt: skip
    """KV blocks of one vLLM-CPU engine: ``fraction`` × host memory over the bytes
    of a block (K and V of every layer). An upper bound: vLLM also takes the
    worker's own resident memory off the reserve (~1 GiB for a tiny model).
    Raises ``ValueError`` for a non-positive size."""
    per_block = 2 * layers * kv_heads * head_dim * dtype_bytes * block_size
    if per_block <= 0 or not (memory_bytes > 0 and 0 < fraction <= 1):
        raise ValueError(
            f"KV size: memory {memory_bytes} B, fraction {fraction}, {per_block} B per block"
        )
    return int(memory_bytes * fraction // per_block)


def sim_setup(
    cfg: Any, engine_kwargs: Mapping[str, Any], profile: str | Path, *, num_blocks: int
) -> tuple[SimSetup, EngineMapping]:
    """The simulated pool of ``cfg``'s one pool (its replica count) on the
    measured ``profile`` (``cascade profile`` CSV), with the engine settings vLLM
    was started with (``engine_kwargs``: ``replicas.vllm_config.llm_config_kwargs``'s
    ``engine_kwargs``) and ``num_blocks`` KV blocks per replica. Raises
    ``ValueError`` for a config with several pools, a missing setting, or a
    profile that cannot be read or fitted."""
    if len(cfg.pools) != 1:
        raise ValueError(
            f"fidelity compares one pool; the config has {len(cfg.pools)} "
            f"({', '.join(p.name for p in cfg.pools)})"
        )
    base = setup_from_config(cfg, "fidelity")
    p = base.pools[0]
    try:
        block = int(engine_kwargs["block_size"])
        settings: dict[str, Any] = {
            "max_num_seqs": int(engine_kwargs["max_num_seqs"]),
            "max_num_batched_tokens": int(engine_kwargs["max_num_batched_tokens"]),
            "max_model_len": int(engine_kwargs["max_model_len"]),
            "block_size": block,
            "prefix_unit_tokens": block,
            "num_blocks": int(num_blocks),
            "profile": str(profile),
        }
    except KeyError as exc:
        raise ValueError(f"fidelity: the vLLM engine arguments have no {exc}") from None
    pool_setup = replace(p, **settings)
    pool_setup.perf_model()  # fail here, naming the pool, on a bad profile
    settings["enable_prefix_caching"] = bool(engine_kwargs.get("enable_prefix_caching", True))
    settings["prefill_tpot_slo_s"] = p.prefill_tpot_slo_s
    settings["replicas"] = p.replicas
    unmodelled = tuple(
        sorted(k for k in engine_kwargs if k not in MODELLED and k not in IN_PROFILE)
    )
    return replace(base, pools=(pool_setup,)), EngineMapping(settings, unmodelled)


def simulate_replay(
    setup: SimSetup, replay: Replay, cfg: Any, *, seed: int = 0, shared_prefix: bool = True,
    overhead_s: float = 0.0,
) -> LatencySamples:  # fmt: skip
    """Per-request TTFT/TPOT/E2E of ``replay`` through the simulator (module
    docstring), ``overhead_s`` added to TTFT and E2E (the serving path; TPOT
    unchanged); a request the simulator did not finish is NaN."""
    from experiments.cascade_stack import build_stack
    from experiments.simulator import simulate

    block = setup.pools[0].block_size
    trace = replay.trace(block, shared_prefix=shared_prefix)
    res = simulate(
        setup, trace, "cascade", seed=seed, client=EXACT_MAX_TOKENS,
        stack=lambda rng, clock: build_stack(cfg, rng, clock),
    )  # fmt: skip
    log = res.log
    return LatencySamples.from_times(
        log.first_token_s - log.arrival_s + overhead_s,
        log.finish_s - log.arrival_s + overhead_s,
        replay.output_tokens,
    )
