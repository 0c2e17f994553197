"""``cascade bench ab --rate auto[:F]``: the offered load as a share of stock Ray's
capacity, measured on this host in the same run.

Capacity is the host's, not the config's: the same two tiny-Llama replicas served
~5 req/s on one 2-core machine and ~17 on another (docs/benchmarks.md, "On a
faster host"), so a fixed rate is "0.8 of capacity" on one machine and 0.2 on the
next. ``auto`` measures it after the side-by-side deploy (``--interleave``): the
first stock router gets ``CAPACITY_REQUESTS`` requests at once, and its served
req/s (completed / the client's duration) is the capacity; the run then offers
``F`` (default ``DEFAULT_SHARE``) of it to every system.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

CAPACITY_REQUESTS = 120  # sent at once: enough to keep both replicas' batches full
SATURATING_RATE = 1000.0  # req/s offered to the capacity run: all queued at once
DEFAULT_SHARE = 0.8  # the "0.8 of stock Ray's measured capacity"


def auto_share(text: object) -> float | None:
    """The share of capacity ``--rate`` asks for: ``auto`` (``DEFAULT_SHARE``) or
    ``auto:F`` with 0 < F <= 2; None for a plain rate list. ``ValueError`` naming
    ``--rate`` otherwise."""
    value = str(text).strip().lower()
    if not value.startswith("auto"):
        return None
    rest = value.removeprefix("auto")
    if not rest:
        return DEFAULT_SHARE
    try:
        share = float(rest.removeprefix(":")) if rest.startswith(":") else math.nan
    except ValueError:
        share = math.nan
    if not (0 < share <= 2):
        raise ValueError(f"--rate: auto or auto:F with 0 < F <= 2, got {text!r}")
    return share


def check_auto(args: Any) -> list[float]:
    """``--rate auto`` needs stock Ray deployed beside Cascade: ``--interleave``
    >= 2, without ``--against-config`` / ``--telemetry-off`` (those deploy two
    Cascade configs, no stock router). ``ValueError`` saying which; else the
    rates known so far: none (``measured_rate`` gives it after the deploy)."""
    if args.interleave < 2:
        raise ValueError("--rate auto measures stock Ray's capacity on the side-by-side "
                         "deployment: add --interleave K (K >= 2)")  # fmt: skip
    if args.against_config or args.telemetry_off:
        raise ValueError("--rate auto: stock Ray's capacity is measured, so it cannot be "
                         "combined with --against-config or --telemetry-off")  # fmt: skip
    return []


def measured_rate(
    drive_client: Callable[..., dict[str, Any]],
    args: Any,
    model: str,
    tokenizer: str,
    out: Path,
    system: str,
    route: str,
    log: Callable[[str], None],
) -> float:
    """``auto_share(args.rate)`` × the served req/s of ``system`` (at ``route``)
    given ``min(CAPACITY_REQUESTS, args.requests)`` requests of ``out/workload.jsonl``
    at once (``drive_client``: ``ab.drive_client``). ``RuntimeError`` when the
    client served nothing."""
    n = min(CAPACITY_REQUESTS, args.requests)
    result = drive_client(args, system, SATURATING_RATE, model, tokenizer, out / "workload.jsonl",
                          out, route=route, n=n, tag=f"{system}-capacity")  # fmt: skip
    served = float(result.get("request_throughput") or 0.0)
    if not (served > 0 and math.isfinite(served)):
        raise RuntimeError(f"{system}: capacity run served nothing ({result.get('failed')} failed)")
    rate = round((auto_share(args.rate) or DEFAULT_SHARE) * served, 2)
    log(f"{system}: capacity {served:.2f} req/s ({n} requests at once); offering {rate:g} req/s")
    return rate
