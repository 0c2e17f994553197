"""A lower bound on E2E latency: each request alone on an empty replica.

A request's **isolated E2E** on a pool is what the simulator's engine model
(``replicas.scheduler``) takes for it when nothing else runs there: its prompt's
prefill, chunked as an empty engine chunks it (``max_num_batched_tokens`` per
step; the first token comes at the end of the last chunk), then ``output − 1``
decode steps of batch size 1, whose KV read grows from ``prompt + 1`` by one
token a step. Step times are the pool's ``PerfModel`` **means**
(``PerfModel.mean_var``: the same model the engines draw from, not a copy). The
**floor** of a request is the smallest isolated E2E over the setup's pools (the
fastest engine for that request).

What the floor assumes, so that it stays below what any routing can reach:

* no queueing, no batching with other requests (a shared step is never cheaper
  in this model's terms, and waiting only adds time);
* the most favourable prefix cache: every leading prefix unit of the prompt that
  *any other* request of the run could register (its prompt covers the unit) is
  cached, whatever the arrival order or replica (at least the last prompt token
  is computed, as in ``KVCacheManager.take_prefix``);
* mean step times: the engines draw lognormal noise around these means, so a
  simulated request can finish below its floor by that noise (short requests
  most; ``e2e_below_floor`` in the report counts how often);
* a batch-1 step is the cheapest step holding the request's work. The vidur
  tables are not quite monotone: for Llama-2-7B a decode step of 2 sequences
  is 1.8% (H100) / 2.6% (A100) shorter than one of 1 at 1k context, and a mixed
  step's extra tokens can land in a dip of up to 2.8 ms (H100), so the floor
  holds up to a few percent.

It is a looser bound than reality, so a floor *below* a target does not show the
target can be reached; a floor *above* it shows no router can reach it (for a
policy that completes every request: a quantile over fewer completions can drop).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from experiments.sim_config import SimSetup
from orchestrator.traces import Trace
from replicas.engine_config import EngineConfig
from replicas.perf_model import PerfModel

QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True, slots=True)
class E2EFloor:
    """Per-request floors of one run (see module docstring).

    seconds[i]: request i's floor (s); ``inf`` when it fits no pool's engine.
    pool[i]: index in ``pool_names`` of the pool that gives it (-1: none).
    cached_tokens[i]: prompt tokens the floor assumed cached (optimistic cache).
    ttft_s[i]: the prefill part of ``seconds[i]`` (its isolated TTFT, s).
    """

    seconds: NDArray[np.float64]
    pool: NDArray[np.int64]
    pool_names: tuple[str, ...]
    cached_tokens: NDArray[np.int64]
    ttft_s: NDArray[np.float64]

    def quantile(self, q: float) -> float:
        """The q-quantile of the floors of requests that fit a pool (NaN: none)."""
        fits = self.seconds[np.isfinite(self.seconds)]
        return float(np.quantile(fits, q)) if fits.size else math.nan

    def fields(self) -> dict[str, float | str | None]:
        """Flat JSON fields: ``e2e_floor_p50_s`` / ``_p90_s`` / ``_p99_s``, the pool
        that is fastest for most requests, the share of prompt tokens assumed cached."""
        out: dict[str, float | str | None] = {
            f"e2e_floor_p{round(q * 100)}_s": self.quantile(q) for q in QUANTILES
        }
        picked = Counter(int(k) for k in self.pool if k >= 0).most_common(1)
        out["e2e_floor_pool"] = self.pool_names[picked[0][0]] if picked else None
        return out


def isolated_e2e_s(
    perf: PerfModel, config: EngineConfig, prompt: int, output: int, cached: int = 0
) -> float:
    """Mean E2E (s) of one request alone on an empty engine (module docstring);
    ``isolated_times``' second value."""
    return isolated_times(perf, config, prompt, output, cached)[1]


def isolated_times(
    perf: PerfModel, config: EngineConfig, prompt: int, output: int, cached: int = 0
) -> tuple[float, float]:
    """Mean (TTFT, E2E) in s of one request alone on an empty engine (module
    docstring); TTFT is its prefill, E2E adds ``output − 1`` decode steps.

    ``cached``: prompt tokens already in the prefix cache (< ``prompt``).
    Returns ``(inf, inf)`` when the engine would refuse the request (an empty
    prompt, or its KV exceeds the cache or ``max_model_len``: ``EngineModel.add_request``).
    Raises ``ValueError`` for ``cached`` outside [0, prompt).
    """
    if prompt >= 1 and not 0 <= cached < prompt:
        raise ValueError(
            f"isolated_e2e_s: need 0 <= cached < prompt, got cached={cached}, prompt={prompt}"
        )
    out = max(1, output)
    total = prompt + out
    if (
        prompt < 1
        or -(-total // config.block_size) > config.num_blocks
        or (config.max_model_len is not None and total > config.max_model_len)
    ):
        return math.inf, math.inf
    mean_var = perf.mean_var
    ttft = 0.0
    done = cached
    chunk_max = config.max_num_batched_tokens  # an empty engine's prefill budget
    while done < prompt:
        c = min(chunk_max, prompt - done)
        ttft += mean_var(c, 1, c, c * (done + 0.5 * c), 0, 0)[0]
        done += c
    steps = out - 1
    decode = 0.0
    if steps:
        # decode j (0-based) reads prompt + 1 + j KV tokens; both perf models are
        # linear in the KV read (replicas.step_time.decode_run relies on it too),
        # so the sum over the steps is exact from two evaluations
        m0 = mean_var(1, 0, 0, 0.0, 1, prompt + 1)[0]
        m1 = mean_var(1, 0, 0, 0.0, 1, prompt + 2)[0]
        decode = steps * m0 + (m1 - m0) * steps * (steps - 1) / 2.0
    return ttft, ttft + decode


def optimistic_cached_tokens(
    prompts: Sequence[int], hashes: Sequence[Sequence[int]], unit: int
) -> NDArray[np.int64]:
    """Per request, the prompt tokens a prefix cache could hold at best: the
    leading units (``unit`` tokens each) whose hash some *other* request of the
    run could register (its prompt covers that unit), stopping before the unit
    that holds the last prompt token. No hashes: zeros."""
    n = len(prompts)
    cached = np.zeros(n, dtype=np.int64)
    if not hashes:
        return cached
    if unit < 1:
        raise ValueError(f"optimistic_cached_tokens: unit must be >= 1, got {unit}")
    registrable: Counter[int] = Counter()
    own: list[set[int]] = []
    for p, hs in zip(prompts, hashes, strict=True):
        mine = {h for j, h in enumerate(hs) if (j + 1) * unit <= p}
        registrable.update(mine)
        own.append(mine)
    for i, (p, hs) in enumerate(zip(prompts, hashes, strict=True)):
        hit = 0
        for j, h in enumerate(hs):
            if (j + 1) * unit >= p or registrable[h] - (h in own[i]) < 1:
                break
            hit += 1
        cached[i] = hit * unit
    return cached


def e2e_floor(setup: SimSetup, trace: Trace, output_tokens: NDArray[np.int64]) -> E2EFloor:
    """The floor of every request of ``trace`` with the output lengths the engines
    generate (``output_tokens``: the trace's, cut at the client's ``max_tokens``,
    ``experiments.simulator.client_caps``). Raises ``ValueError`` on a length
    mismatch."""
    n = len(trace)
    if output_tokens.size != n:
        raise ValueError(f"e2e_floor: {output_tokens.size} output lengths for {n} requests")
    prompts = trace.prompt_tokens.tolist()
    outs = output_tokens.tolist()
    best = np.full(n, math.inf)
    ttft = np.full(n, math.inf)
    pool = np.full(n, -1, dtype=np.int64)
    cached_best = np.zeros(n, dtype=np.int64)
    for k, p in enumerate(setup.pools):
        perf, cfg = p.perf_model(), p.engine_config()
        hashes = trace.hashes if cfg.enable_prefix_caching else ()
        cached = optimistic_cached_tokens(prompts, hashes, cfg.prefix_unit_tokens)
        for i in range(n):
            pre, t = isolated_times(perf, cfg, prompts[i], outs[i], int(cached[i]))
            if t < best[i]:
                best[i], ttft[i], pool[i], cached_best[i] = t, pre, k, cached[i]
    return E2EFloor(best, pool, tuple(p.name for p in setup.pools), cached_best, ttft)
