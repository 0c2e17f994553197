"""Request traces: real (Azure 2023, Mooncake) and synthetic, and time scaling.

A trace is a ``Trace``: a struct of arrays (arrival s, prompt tokens, output
tokens, prefix hashes), sorted by arrival, starting at 0. Arrays, not one object
per request, so a 200,000-request trace costs a few MB; ``Trace.request(i)`` gives
a frozen ``TraceRequest`` when one is wanted.

Loaders:

* ``load_azure(path)``: ``TIMESTAMP,ContextTokens,GeneratedTokens`` (Azure LLM
  inference trace 2023; timestamps ``YYYY-MM-DD HH:MM:SS.fffffff``).
* ``load_mooncake(path)``: JSON lines with ``timestamp`` (ms), ``input_length``,
  ``output_length``, ``hash_ids`` (ids of 512-token prompt blocks).
* ``poisson``, ``gamma_bursty``, ``mmpp``: synthetic arrivals with lognormal or
  Pareto-tailed lengths, from an injected ``numpy.random.Generator``.

``load_trace(name_or_path)`` accepts a short name (``azure-conv``, ``mooncake``,
``poisson``, ``bursty``, ``mmpp``) or a path. ``Trace.scaled_to_rate(r)`` rescales
time to a target mean arrival rate; the simulator picks ``r`` as a load fraction of
the cluster's measured capacity.

Failure modes: a missing file raises ``FileNotFoundError``; a malformed line
raises ``ValueError`` naming the file, the line number and the reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from replicas.profiles import data_dir

SHORT_NAMES: dict[str, str] = {
    "azure-conv": "traces/azure2023_conv.csv",
    "mooncake": "traces/mooncake_synthetic.jsonl",
}
MOONCAKE_BLOCK_TOKENS = 512


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request of a trace (seconds from the trace start, tokens)."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_hashes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Trace:
    """A trace as arrays; ``hashes[i]`` is request i's prefix hashes (or ``()``)."""

    name: str
    arrival_s: NDArray[np.float64]
    prompt_tokens: NDArray[np.int64]
    output_tokens: NDArray[np.int64]
    hashes: tuple[tuple[int, ...], ...] = ()
    prefix_unit_tokens: int = MOONCAKE_BLOCK_TOKENS

    def __post_init__(self) -> None:
        n = self.arrival_s.size
        if self.prompt_tokens.size != n or self.output_tokens.size != n:
            raise ValueError(f"trace {self.name}: column lengths differ")
        if self.hashes and len(self.hashes) != n:
            raise ValueError(f"trace {self.name}: hashes length differs")
        if n and np.any(np.diff(self.arrival_s) < 0):
            raise ValueError(f"trace {self.name}: arrivals must be sorted")

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0

    @property
    def rate(self) -> float:
        """Mean arrival rate (requests/s)."""
        d = self.duration_s
        return (len(self) - 1) / d if d > 0 else math.inf

    def request(self, i: int) -> TraceRequest:
        h = self.hashes[i] if self.hashes else ()
        return TraceRequest(
            float(self.arrival_s[i]), int(self.prompt_tokens[i]), int(self.output_tokens[i]), h
        )

    def head(self, n: int | None = None, *, duration_s: float | None = None) -> Trace:
        """The first ``n`` requests and/or those arriving before ``duration_s``."""
        k = len(self)
        if duration_s is not None:
            k = int(np.searchsorted(self.arrival_s, self.arrival_s[0] + duration_s, "right"))
        if n is not None:
            k = min(k, n)
        return self._take(slice(0, k), self.name)

    def _take(self, sel: slice, name: str) -> Trace:
        h = self.hashes[sel] if self.hashes else ()
        return Trace(
            name, self.arrival_s[sel], self.prompt_tokens[sel], self.output_tokens[sel], h,
            self.prefix_unit_tokens,
        )  # fmt: skip

    def scaled_to_rate(self, rate: float) -> Trace:
        """Time-scale the arrivals (keep the burst pattern) to a mean ``rate`` req/s."""
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"target rate must be > 0, got {rate!r}")
        factor = self.rate / rate if math.isfinite(self.rate) else 1.0
        t = (self.arrival_s - self.arrival_s[0]) * factor
        return Trace(
            f"{self.name}@{rate:.3g}rps", t, self.prompt_tokens, self.output_tokens, self.hashes,
            self.prefix_unit_tokens,
        )  # fmt: skip

    def summary(self) -> dict[str, float]:
        """Published-style figures: rate, prompt/output percentiles, inter-arrival CV."""
        gaps = np.diff(self.arrival_s)
        return {
            "requests": float(len(self)),
            "duration_s": self.duration_s,
            "rate_rps": self.rate,
            "prompt_p50": float(np.percentile(self.prompt_tokens, 50)),
            "prompt_p99": float(np.percentile(self.prompt_tokens, 99)),
            "output_p50": float(np.percentile(self.output_tokens, 50)),
            "output_p99": float(np.percentile(self.output_tokens, 99)),
            "interarrival_cv": float(gaps.std() / gaps.mean()) if gaps.size > 1 else 0.0,
        }


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"trace not found: {p}")
    return p


def _parse_ts(text: str) -> float:
    # 7 fractional digits (100 ns) are more than datetime parses: keep 6
    date, _, frac = text.strip().partition(".")
    base = datetime.strptime(date, "%Y-%m-%d %H:%M:%S")
    return base.timestamp() + (float("0." + frac) if frac else 0.0)


def load_azure(path: str | Path) -> Trace:
    """Azure LLM inference trace 2023 (CSV ``TIMESTAMP,ContextTokens,GeneratedTokens``)."""
    p = _resolve(path)
    ts: list[float] = []
    prompt: list[int] = []
    out: list[int] = []
    with p.open() as f:
        header = f.readline().strip().split(",")
        if header[:3] != ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]:
            raise ValueError(f"{p}:1: expected header TIMESTAMP,ContextTokens,GeneratedTokens")
        for lineno, line in enumerate(f, start=2):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split(",")
            try:
                if len(parts) != 3:
                    raise ValueError(f"{len(parts)} fields, expected 3")
                t, c, g = _parse_ts(parts[0]), int(parts[1]), int(parts[2])
            except ValueError as exc:
                raise ValueError(f"{p}:{lineno}: malformed line ({exc})") from None
            if c < 1 or g < 1:
                raise ValueError(f"{p}:{lineno}: token counts must be >= 1")
            ts.append(t)
            prompt.append(c)
            out.append(g)
    if not ts:
        raise ValueError(f"{p}: no requests")
    return _build(p.stem, ts, prompt, out, [])


def load_mooncake(path: str | Path, *, block_tokens: int = MOONCAKE_BLOCK_TOKENS) -> Trace:
    """Mooncake JSON lines (``timestamp`` ms, ``input_length``, ``output_length``, ``hash_ids``)."""
    p = _resolve(path)
    ts: list[float] = []
    prompt: list[int] = []
    out: list[int] = []
    hashes: list[tuple[int, ...]] = []
    with p.open() as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                t = float(d["timestamp"]) / 1000.0
                c, g = int(d["input_length"]), int(d["output_length"])
                h = tuple(int(x) for x in d.get("hash_ids", ()))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{p}:{lineno}: malformed line ({exc!r})") from None
            if c < 1 or g < 1:
                raise ValueError(f"{p}:{lineno}: token counts must be >= 1")
            ts.append(t)
            prompt.append(c)
            out.append(g)
            hashes.append(h)
    if not ts:
        raise ValueError(f"{p}: no requests")
    return _build(p.stem, ts, prompt, out, hashes, block_tokens)


def _build(
    name: str,
    ts: list[float],
    prompt: list[int],
    out: list[int],
    hashes: list[tuple[int, ...]],
    unit: int = MOONCAKE_BLOCK_TOKENS,
) -> Trace:
    t = np.asarray(ts, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order[0]]
    h = tuple(hashes[i] for i in order) if hashes else ()
    return Trace(
        name, t, np.asarray(prompt, np.int64)[order], np.asarray(out, np.int64)[order], h, unit
    )


# ---- synthetic -----------------------------------------------------------------
def _lengths(
    rng: np.random.Generator,
    n: int,
    median: float,
    sigma: float,
    tail_alpha: float | None,
    cap: int,
) -> NDArray[np.int64]:
    """Lognormal lengths (``median``, log-σ ``sigma``); with ``tail_alpha`` a Pareto
    tail (index α) replaces the top 10 %: heavy-tailed lengths."""
    x = median * np.exp(sigma * rng.standard_normal(n))
    if tail_alpha is not None:
        top = rng.random(n) < 0.1
        x[top] = np.quantile(x, 0.9) * (1.0 + rng.pareto(tail_alpha, int(top.sum())))
    return np.clip(np.rint(x), 1, cap).astype(np.int64)


def _synthetic(
    name: str, t: NDArray[np.float64], rng: np.random.Generator, heavy_tail: bool
) -> Trace:
    n = t.size
    alpha = 1.5 if heavy_tail else None
    prompt = _lengths(rng, n, 1020.0, 0.8, alpha, 16384)
    out = _lengths(rng, n, 129.0, 0.8, alpha, 4096)
    return Trace(name, t - t[0], prompt, out)


def poisson(n: int, rate: float, rng: np.random.Generator, *, heavy_tail: bool = False) -> Trace:
    """Poisson arrivals at ``rate`` req/s (CV of gaps 1)."""
    if n < 1 or not rate > 0:
        raise ValueError("poisson: n >= 1 and rate > 0 required")
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    return _synthetic(f"poisson{rate:g}", t, rng, heavy_tail)


def gamma_bursty(
    n: int, rate: float, cv: float, rng: np.random.Generator, *, heavy_tail: bool = False
) -> Trace:
    """Gamma renewal arrivals: mean gap 1/rate, gap CV ``cv`` (> 1 = bursty)."""
    if n < 1 or not rate > 0 or not cv > 0:
        raise ValueError("gamma_bursty: n >= 1, rate > 0 and cv > 0 required")
    k = 1.0 / (cv * cv)
    t = np.cumsum(rng.gamma(k, 1.0 / (rate * k), n))
    return _synthetic(f"gamma{rate:g}cv{cv:g}", t, rng, heavy_tail)


def mmpp(
    n: int,
    rates: tuple[float, float],
    mean_sojourn_s: tuple[float, float],
    rng: np.random.Generator,
    *,
    heavy_tail: bool = False,
) -> Trace:
    """Two-state Markov-modulated Poisson process: rate ``rates[s]`` while in state
    s, exponential sojourns with means ``mean_sojourn_s``."""
    if n < 1 or min(rates) <= 0 or min(mean_sojourn_s) <= 0:
        raise ValueError("mmpp: n >= 1, rates > 0 and sojourns > 0 required")
    out = np.empty(n)
    t, state, i = 0.0, 0, 0
    while i < n:
        end = t + rng.exponential(mean_sojourn_s[state])
        while i < n:
            t += rng.exponential(1.0 / rates[state])
            if t > end:
                t = end
                break
            out[i] = t
            i += 1
        state = 1 - state
    return _synthetic(f"mmpp{rates[0]:g}-{rates[1]:g}", out, rng, heavy_tail)


def load_trace(name: str, *, rng: np.random.Generator | None = None, n: int = 20000) -> Trace:
    """A trace by short name or path (see module docstring). Synthetic names use
    ``rng`` (default seed 0) and ``n`` requests at 10 req/s before load scaling."""
    g = rng if rng is not None else np.random.default_rng(0)
    if name in SHORT_NAMES:
        path = data_dir() / SHORT_NAMES[name]
        return load_azure(path) if path.suffix == ".csv" else load_mooncake(path)
    if name == "poisson":
        return poisson(n, 10.0, g)
    if name == "bursty":
        return gamma_bursty(n, 10.0, 3.0, g)
    if name == "mmpp":
        return mmpp(n, (4.0, 30.0), (60.0, 15.0), g)
    if name == "heavy-tail":
        return poisson(n, 10.0, g, heavy_tail=True)
    p = Path(name)
    if p.suffix in (".jsonl", ".json"):
        return load_mooncake(p)
    if p.suffix == ".csv":
        return load_azure(p)
    if not p.exists():
        raise FileNotFoundError(
            f"trace {name!r}: not a file nor a short name "
            f"({', '.join([*SHORT_NAMES, 'poisson', 'bursty', 'mmpp', 'heavy-tail'])})"
        )
    raise ValueError(f"trace {name!r}: unknown format (expected .csv or .jsonl)")
