"""Replay a trace through an OpenAI-compatible HTTP API and measure what clients see.

Each request is sent at its (time-scaled) arrival time, streaming, with a prompt
of the trace's length (scaled by ``prompt_scale`` to what the cluster can serve)
and ``max_tokens`` = the trace's output length (scaled by ``output_scale``);
``ignore_eos`` asks vLLM to produce exactly that many tokens. Every streamed
chunk is timestamped client-side: TTFT, inter-token latencies and E2E per
request. Bounded in count and time; talks only to the given URL.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from orchestrator.traces import Trace

_WORDS = ("the", "cascade", "of", "latency", "through", "decode", "prefill", "tokens")


@dataclass
class RequestRecord:
    index: int
    sent_s: float  # relative to the replay start
    prompt_tokens: int
    max_tokens: int
    status: int = 0
    ttft_s: float = math.nan
    e2e_s: float = math.nan
    chunks: list[float] = field(default_factory=list)  # chunk arrival times (relative)
    error: str = ""

    @property
    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.chunks, self.chunks[1:], strict=False)]


def prompt_text(tokens: int) -> str:
    """A prompt of about ``tokens`` tokens (one short word ≈ one token)."""
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(max(tokens, 1)))


async def _one(session: object, url: str, model: str, rec: RequestRecord, t0: float) -> None:
    import aiohttp

    assert isinstance(session, aiohttp.ClientSession)
    body = {
        "model": model,
        "prompt": prompt_text(rec.prompt_tokens),
        "max_tokens": rec.max_tokens,
        "stream": True,
        "ignore_eos": True,
    }
    start = time.perf_counter()
    try:
        async with session.post(f"{url}/completions", json=body) as resp:
            rec.status = resp.status
            if resp.status != 200:
                rec.error = (await resp.text())[:200]
                return
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                payload = json.loads(line[6:])
                if payload.get("choices") and payload["choices"][0].get("text"):
                    rec.chunks.append(time.perf_counter() - t0)
    except (TimeoutError, aiohttp.ClientError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
        return
    end = time.perf_counter()
    if rec.chunks:
        rec.ttft_s = rec.chunks[0] - (start - t0)
        rec.e2e_s = end - start


async def replay(
    trace: Trace,
    url: str,
    model: str,
    *,
    prompt_scale: float = 1.0,
    output_scale: float = 1.0,
    max_prompt_tokens: int = 1_000_000,
    max_output_tokens: int = 1_000_000,
    timeout_s: float = 300.0,
    progress: Callable[[int, int], None] | None = None,
) -> list[RequestRecord]:
    """Send every request of ``trace`` at its arrival time; return the records."""
    import aiohttp

    url = url.rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    n = len(trace)
    arrivals = trace.arrival_s - trace.arrival_s[0]
    recs = [
        RequestRecord(
            index=i,
            sent_s=float(arrivals[i]),
            prompt_tokens=int(
                min(max(trace.prompt_tokens[i] * prompt_scale, 1), max_prompt_tokens)
            ),
            max_tokens=int(min(max(trace.output_tokens[i] * output_scale, 1), max_output_tokens)),
        )
        for i in range(n)
    ]
    done = 0
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        t0 = time.perf_counter()

        async def fire(rec: RequestRecord) -> None:
            nonlocal done
            delay = rec.sent_s - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            await _one(session, url, model, rec, t0)
            done += 1
            if progress is not None:
                progress(done, n)

        await asyncio.gather(*(fire(r) for r in recs))
    return recs


def report(
    records: list[RequestRecord],
    *,
    window_s: float = 30.0,
    ttft_slo_s: float = 2.0,
    tpot_slo_s: float = 0.1,
) -> dict[str, float | int | None]:
    """P50/P90/P99 of TTFT, ITL and E2E; σ(P99)/mean(P99) over windows; SLO attainment."""
    ok = [r for r in records if r.status == 200 and r.chunks]
    out: dict[str, float | int | None] = {
        "requests": len(records),
        "completed": len(ok),
        "errors": sum(1 for r in records if r.status != 200 or not r.chunks),
        "rejected_429": sum(1 for r in records if r.status == 429),
    }
    if not ok:
        return out
    ttft = np.array([r.ttft_s for r in ok])
    e2e = np.array([r.e2e_s for r in ok])
    itl = np.concatenate([np.asarray(r.itls) for r in ok if len(r.chunks) > 1] or [np.zeros(0)])
    # TPOT = (E2E − TTFT)/(tokens − 1) per request: unaffected by how the server
    # groups tokens into stream chunks (Ray Serve LLM batches them every few ms, so
    # client-side gaps between chunks, "itl" here, are often 0)
    tpot = np.array([(r.e2e_s - r.ttft_s) / max(len(r.chunks) - 1, 1) for r in ok])
    for name, x in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2e", e2e)):
        for q in (50, 90, 99):
            out[f"{name}_p{q}_s"] = float(np.percentile(x, q)) if x.size else None
    sent = np.array([r.sent_s for r in ok])
    p99s = []
    for w in range(int(sent.max() // window_s) + 1):
        sel = e2e[(sent >= w * window_s) & (sent < (w + 1) * window_s)]
        if sel.size >= 10:
            p99s.append(float(np.percentile(sel, 99)))
    out["p99_windows"] = len(p99s)
    out["p99_window_cv"] = float(np.std(p99s) / np.mean(p99s)) if len(p99s) > 1 else None
    # over every request sent: a failed request did not meet its SLO
    out["slo_attainment"] = float(np.sum((ttft <= ttft_slo_s) & (tpot <= tpot_slo_s))) / len(
        records
    )
    out["tokens_per_s"] = float(
        sum(len(r.chunks) for r in ok) / max(max(r.sent_s + r.e2e_s for r in ok), 1e-9)
    )
    return out
