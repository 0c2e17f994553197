"""What ``cascade bench fidelity`` measures before comparing: the deployment's costs
that the engine's step profile cannot see, each from a probe sent before the loads.

The profile (``cascade profile``) times one engine with the host to itself.
Three terms make the simulated pool a model of the deployed one; each is measured
on requests that are not the compared loads' (the probes, sent first), never
fitted to the loads:

1. ``step_overhead`` (s per engine step, ``replicas.step_time``): the serving
   path's per-step cost (the engine front-end's output processing, IPC, Serve's
   streaming). From the probe (requests one at a time, so one engine busy and
   no batch): the median over its requests of real TPOT − simulated TPOT, the
   simulator run with no step overhead. A request's TPOT is the mean of its
   decode steps, so a cost of X per step moves it by exactly X.
2. ``contention_alpha`` (``replicas.core_sharing``): how much a busy engine on
   the same cores slows a step. From the contention probe (requests two at a
   time, so mostly both engines busy): the ``alpha`` at which the median over
   its requests of simulated TPOT − real TPOT is 0 (bisection on
   [0, ``ALPHA_MAX``]; 0 when the simulator is already as slow without
   contention), with the step overhead of 1. in place.
3. ``per_stream`` (``replicas.core_sharing``): how much each request running
   on the host slows a step (the serving stack's CPU per stream, on the
   engines' cores). From the stream probe (half the pool's batch slots at a
   time; the capacity run's requests, all at once, when there is none): the
   ``per_stream`` at which the median over its
   requests of simulated TPOT − real TPOT is 0 (bisection on
   [0, ``PER_STREAM_MAX``]), with 1. and 2. in place; then 2. is fitted again
   with it in place (the two-at-a-time probe has two streams), once.
   With the host model instead (``--core-model host``; the default when each
   engine has cores of its own): 2. and 3. are replaced by the host's cores
   shared by the busy engines and the stack's per-token work, whose one free
   parameter ``stream_cost`` is fitted to the same stream probe the same way
   (``fit_host_stream_cost``, bisection on [0, ``HOST_STREAM_MAX``]); 1. is
   then fitted again with it in place, and ``stream_cost`` once more.
4. ``serving_overhead`` (s, added to TTFT and E2E; not a step cost): the
   request's fixed path (HTTP, proxy, ingress, replica actor). From the probe:
   the median of real TTFT − simulated TTFT, with 1.-3. in place (the first
   token's step carries the step overhead too).

Why per step and not per token: at 0.3 and 0.6 of capacity the real TPOT was
12.5 and 12.9 ms while the requests in flight per engine about doubled; a
per-token cost would have grown with them (docs/simulator.md §5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from experiments.benchmarks.fidelity_replay import Replay, simulate_replay
from experiments.sim_config import SimSetup
from replicas.core_sharing import CoreSharing

ALPHA_MAX = 4.0  # a step 5× as long per busy peer: beyond any sharing of one core
ALPHA_TOL = 1e-3
PER_STREAM_MAX = 0.25  # 64 streams would make a step 17x as long: beyond any host
PER_STREAM_TOL = 1e-4
HOST_STREAM_MAX = 16.0  # k: a token costing the stack 16 steps of CPU: beyond any host


def with_serving_costs(
    setup: SimSetup, *, step_overhead_s: float = 0.0, sharing: CoreSharing | None = None
) -> SimSetup:
    """``setup`` with every pool's ``step_overhead_s`` and the setup's
    ``core_sharing`` replaced (0 and None: the engine profile alone)."""
    pools = tuple(replace(p, step_overhead_s=step_overhead_s) for p in setup.pools)
    return replace(setup, pools=pools, core_sharing=sharing)


def _median_diff(a: NDArray[np.float64], b: NDArray[np.float64], what: str, src: str) -> float:
    diff = a - b
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        raise ValueError(f"{src}: no probe request to measure the {what}")
    return float(np.median(diff))


def step_overhead(
    setup: SimSetup, probe: Replay, cfg: Any, *, seed: int = 0, shared_prefix: bool = True
) -> float:
    """Term 1 (module docstring), in s per step; may be negative (the simulated
    engine slower than the real one: the caller decides). Raises ``ValueError``
    when no probe request has a TPOT (all one-token outputs)."""
    alone = with_serving_costs(setup, sharing=setup.core_sharing)
    sim = simulate_replay(alone, probe, cfg, seed=seed, shared_prefix=shared_prefix)
    return _median_diff(probe.real.tpot, sim.tpot, "per-step overhead (TPOT)", probe.source)


def serving_overhead(
    setup: SimSetup, probe: Replay, cfg: Any, *, seed: int = 0, shared_prefix: bool = True
) -> float:
    """Term 3 (module docstring), in s, with ``setup``'s step costs as they are.
    Raises ``ValueError`` when no probe request has both TTFTs."""
    sim = simulate_replay(setup, probe, cfg, seed=seed, shared_prefix=shared_prefix)
    return _median_diff(probe.real.ttft, sim.ttft, "serving overhead (TTFT)", probe.source)


def fit_contention(
    setup: SimSetup, probe: Replay, cfg: Any, *, engines_per_group: int, seed: int = 0,
    shared_prefix: bool = True, alpha_max: float = ALPHA_MAX, tol: float = ALPHA_TOL,
) -> tuple[float, str]:  # fmt: skip
    """Term 2 (module docstring): ``(alpha, note)``, ``note`` saying whether it
    is interior or at a bound. ``setup``: with the step overhead already in place.
    Raises ``ValueError`` when no probe request has a TPOT, or for a group of
    one engine (nothing to share)."""
    if engines_per_group < 2:
        raise ValueError("contention: a core group of one engine shares nothing")

    per_stream = setup.core_sharing.per_stream if setup.core_sharing else 0.0

    def err(alpha: float) -> float:
        s = replace(setup, core_sharing=CoreSharing(engines_per_group, alpha, per_stream))
        sim = simulate_replay(s, probe, cfg, seed=seed, shared_prefix=shared_prefix)
        return _median_diff(sim.tpot, probe.real.tpot, "contention (TPOT)", probe.source)

    return _bisect(err, alpha_max, tol)


def fit_stream_cost(
    setup: SimSetup, probe: Replay, cfg: Any, *, seed: int = 0, shared_prefix: bool = True,
    hi: float = PER_STREAM_MAX, tol: float = PER_STREAM_TOL,
) -> tuple[float, str]:  # fmt: skip
    """Term 3 (module docstring): ``(per_stream, note)``. ``setup``: with its
    ``core_sharing`` (the group and ``alpha``) and step overhead in place.
    Raises ``ValueError`` when no probe request has a TPOT."""
    base = setup.core_sharing or CoreSharing(1, 0.0)
    return _fit_sharing(setup, probe, cfg, lambda x: replace(base, per_stream=x),
                        "stream cost (TPOT)", seed=seed, shared_prefix=shared_prefix, hi=hi,
                        tol=tol)  # fmt: skip


def fit_host_stream_cost(
    setup: SimSetup, probe: Replay, cfg: Any, *, seed: int = 0, shared_prefix: bool = True,
    hi: float = HOST_STREAM_MAX, tol: float = PER_STREAM_TOL, skip: int = 0,
) -> tuple[float, str]:  # fmt: skip
    """``stream_cost`` (k) of the host model (``replicas.core_sharing``):
    ``(k, note)``. ``setup``: with the host model's ``core_sharing`` (cores,
    engine demand) and step overhead in place. The whole probe is replayed;
    the median compares the requests after the first ``skip`` in start order
    (a closed-loop probe's opening burst: started together, their TPOT carries
    every one's prefill; the later ones start as others finish, the steady
    state the loads run in). Raises ``ValueError`` when no compared request has
    a TPOT, or without the host model."""
    base = setup.core_sharing
    if base is None or not base.host_cores:
        raise ValueError("host stream cost: the setup has no host model (host_cores)")
    if not 0 <= skip < len(probe):
        raise ValueError(f"host stream cost: skip {skip} of a {len(probe)}-request probe")
    return _fit_sharing(setup, probe, cfg, lambda x: replace(base, stream_cost=x),
                        "host stream cost (TPOT)", seed=seed, shared_prefix=shared_prefix, hi=hi,
                        tol=tol, skip=skip)  # fmt: skip


def _fit_sharing(
    setup: SimSetup, probe: Replay, cfg: Any, sharing: Callable[[float], CoreSharing],
    what: str, *, seed: int, shared_prefix: bool, hi: float, tol: float, skip: int = 0,
) -> tuple[float, str]:  # fmt: skip
    """Bisect x of ``sharing(x)`` (one term of the core sharing) until the
    median simulated − real TPOT over the probe's requests after the first
    ``skip`` is 0 (``_bisect``)."""

    def err(x: float) -> float:
        s = replace(setup, core_sharing=sharing(x))
        sim = simulate_replay(s, probe, cfg, seed=seed, shared_prefix=shared_prefix)
        return _median_diff(sim.tpot[skip:], probe.real.tpot[skip:], what, probe.source)

    return _bisect(err, hi, tol)


def _bisect(err: Callable[[float], float], hi: float, tol: float) -> tuple[float, str]:
    """The root of a (roughly) non-decreasing ``err`` on [0, hi], clamped to the
    bounds, with a note."""
    e0 = err(0.0)
    if e0 >= 0:
        return 0.0, f"at 0 (the simulator is {e0 * 1e3:+.2f} ms/token without contention)"
    if err(hi) < 0:
        return hi, f"at the bound {hi:g} (still too fast there)"
    lo = 0.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if err(mid) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi), "fitted"


def fit_streams(
    setup: SimSetup, streams: Replay, pair: Replay | None, cfg: Any, *, what: str, **kw: Any
) -> tuple[float, float, str, str]:
    """Term 3 from ``streams`` (a probe of many requests at once; ``what`` names
    it in the source string), then term 2 again with it in place when ``pair``
    (the two-at-a-time probe) is given and the group shares cores:
    ``(per_stream, alpha, where per_stream came from, a note for alpha's
    source)``. ``setup``: with terms 1 and 2 in place."""
    sharing = setup.core_sharing or CoreSharing(1, 0.0)
    per_stream, note = fit_stream_cost(setup, streams, cfg, **kw)
    source = f"{what} ({len(streams)} requests): {note}"
    alpha, alpha_note = sharing.alpha, ""
    if pair is not None and sharing.engines_per_group >= 2:
        with_streams = replace(setup, core_sharing=replace(sharing, per_stream=per_stream))
        alpha, refit = fit_contention(
            with_streams, pair, cfg, engines_per_group=sharing.engines_per_group, **kw
        )
        alpha_note = f"; again with per_stream in place: {refit}"
    return per_stream, alpha, source, alpha_note
