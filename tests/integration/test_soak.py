"""A bounded soak: SimEngine load on the Cascade app, RSS of every Cascade actor bounded.

The app of ``test_faults`` (ingress, router, controller, two simulated replicas)
serves ``CASCADE_SOAK_S`` seconds (default 60: the suite's share; issue 16 asks for
20 minutes: ``CASCADE_SOAK_S=1200``) of back-to-back streams from 4 client threads.
Every Cascade actor's RSS (the controller, the ingress, the pool's replicas: the
processes that hold Cascade state) is sampled after a warm-up and at the end; the
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
    completes; every Cascade actor's RSS grows by less than the stated bound."""
    with faults._Load(url, 4, max_tokens=64) as load:
        time.sleep(WARMUP_S)
        start = _cascade_rss_mib()
        time.sleep(SOAK_S - WARMUP_S)
    end = _cascade_rss_mib()
    minutes = (SOAK_S - WARMUP_S) / 60
    bound = RSS_GROWTH_BOUND_MIB + RSS_GROWTH_PER_MIN_MIB * minutes
    growth = {name: end[name] - mib for name, mib in start.items() if name in end}
    worst = max(growth, key=lambda n: growth[n])
    label = worst.split("#")[1] if "#" in worst else worst  # the deployment, or the actor
    fault = f"soak {SOAK_S / 60:.0f} min (max RSS growth {growth[worst]:.0f} MiB, {label})"
    row = faults._row(fault, load.done)
    print("RSS MiB start -> end: " + ", ".join(
        f"{n}: {start[n]:.0f} -> {end[n]:.0f}" for n in sorted(growth)))  # fmt: skip
    assert len(growth) >= 4, (start, end)  # controller, ingress, two replicas: none died
    assert all(g < bound for g in growth.values()), (bound, growth)
    assert row[2] == row[1] > 0 and row[5] == 0, faults._lost(load.done)
