"""A bounded soak: SimEngine load on the Cascade app, RSS of every Cascade actor bounded.

The app of ``test_faults`` (ingress, router, controller, two simulated replicas)
serves ``CASCADE_SOAK_S`` seconds (default 60: the suite's share; issue 16 asks for
20 minutes: ``CASCADE_SOAK_S=1200``) of back-to-back streams from 4 client threads.
Every Cascade actor's RSS (the controller, the ingress, the pool's replicas: the
processes that hold Cascade state) is sampled ``SAMPLES`` times after a warm-up; the
growth of each must stay under ``RSS_GROWTH_BOUND_MIB`` + ``RSS_GROWTH_PER_MIN_MIB``
per minute soaked (what a leak of one small object per request would exceed), and
nothing is lost.
"""

from __future__ import annotations

import os
import time

import psutil
import pytest

ray = pytest.importorskip("ray")

from tests.integration import test_faults as faults  # noqa: E402
from tests.integration.test_faults import url  # noqa: E402, F401  (the app fixture)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SOAK_S = float(os.environ.get("CASCADE_SOAK_S", "60"))
WARMUP_S = min(30.0, SOAK_S / 4)
RSS_GROWTH_BOUND_MIB = 64.0
RSS_GROWTH_PER_MIN_MIB = 2.0
SAMPLES = 10  # RSS samples after the warm-up
CASCADE_CLASSES = ("ControllerActor", "ServeReplica:cascade:")


def _cascade_rss_mib() -> dict[str, float]:
    """RSS (MiB) of every live Cascade actor process, by actor name."""
    from ray._private.state import actors

    out: dict[str, float] = {}
    for info in actors().values():
        cls = str(info["ActorClassName"])
        if info["State"] != "ALIVE" or not cls.startswith(CASCADE_CLASSES):
            continue
        try:
            out[str(info["Name"] or cls)] = psutil.Process(info["Pid"]).memory_info().rss / 2**20
        except psutil.Error:
            continue
    return out


def test_a_bounded_soak_keeps_every_cascade_actor_rss_bounded(url: str) -> None:  # noqa: F811
    """Injected: nothing but time (``SOAK_S`` s of streams). Seen: every request
    completes; every Cascade actor's RSS grows by less than the stated bound.
    RSS is sampled every ``SAMPLES``-th of the soak after the warm-up, and the
    slope of each actor's RSS over the second half (least squares, MiB/min) is
    printed: two samples cannot tell a leak from a warm-up still filling."""
    samples: list[tuple[float, dict[str, float]]] = []
    with faults._Load(url, 4, max_tokens=64) as load:
        time.sleep(WARMUP_S)
        t0 = time.monotonic()
        period = (SOAK_S - WARMUP_S) / SAMPLES
        for k in range(SAMPLES + 1):
            samples.append(((time.monotonic() - t0) / 60, _cascade_rss_mib()))
            if k < SAMPLES:
                time.sleep(max(0.0, t0 + (k + 1) * period - time.monotonic()))
    start, end = samples[0][1], samples[-1][1]
    minutes = (SOAK_S - WARMUP_S) / 60
    bound = RSS_GROWTH_BOUND_MIB + RSS_GROWTH_PER_MIN_MIB * minutes
    growth = {name: end[name] - mib for name, mib in start.items() if name in end}
    worst = max(growth, key=lambda n: growth[n])
    label = worst.split("#")[1] if "#" in worst else worst  # the deployment, or the actor
    fault = f"soak {SOAK_S / 60:.0f} min (max RSS growth {growth[worst]:.0f} MiB, {label})"
    row = faults._row(fault, load.done)
    slopes = {n: second_half_slope(samples, n) for n in growth}
    shown = [f"{n}: {start[n]:.0f} -> {end[n]:.0f} ({slopes[n]:+.2f})" for n in sorted(growth)]
    print("RSS MiB start -> end (slope over the second half, MiB/min): " + ", ".join(shown))
    assert len(growth) >= 4, (start, end)  # controller, ingress, two replicas: none died
    assert all(g < bound for g in growth.values()), (bound, growth)
    assert row[2] == row[1] > 0 and row[5] == 0, faults._lost(load.done)


def second_half_slope(samples: list[tuple[float, dict[str, float]]], name: str) -> float:
    """Least-squares slope (MiB/min) of ``name``'s RSS over the later half of
    ``samples`` ((minutes, RSS by actor) pairs); 0 with fewer than two points."""
    points = [(t, rss[name]) for t, rss in samples[len(samples) // 2 :] if name in rss]
    if len(points) < 2:
        return 0.0
    mt = sum(t for t, _ in points) / len(points)
    mr = sum(r for _, r in points) / len(points)
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (r - mr) for t, r in points) / var if var > 0 else 0.0
