"""Serve custom autoscaling policy: replica counts follow the controller's Plan.

``AutoscalingConfig(policy=AutoscalingPolicy(policy_function=
"orchestrator.autoscale:plan_policy"))`` on each pool deployment. Serve calls the
policy inside its controller's control loop (every ~0.1 s, per deployment), so the
policy never blocks: it answers from ``TargetCache``, which asks the Cascade
controller for its per-pool targets in the background at most once per
``REFRESH_S`` and takes the answer on a later call. Targets change at the
allocator's pace (``loops.allocation_period_s``, 30 s by default), so a second
of lag costs nothing. Without an answer younger than ``STALE_S`` (controller
missing, restarting or slow) the pool keeps its current count. Serve clips the
result to the deployment's min/max; a policy that raises (a bad context, a
bad answer) holds the current count too, counted in ``TargetCache.policy_errors``
and logged once. A scale-down drains: Serve stops routing
to a replica it removes and waits for its ongoing requests
(``graceful_shutdown_timeout_s``).

Why not a blocking ``ray.get`` (the first version): it ran a GCS name lookup and
a round trip to the controller actor on Serve's control loop ten times a second
per pool, stalling that loop (health checks, routing-table long polls) for up to
its timeout whenever the Cascade controller was busy; measured in
docs/benchmarks.md ("Serving path").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from replicas.names import CONTROLLER_NAME, CONTROLLER_NAMESPACE

logger = logging.getLogger("cascade.autoscale")
REFRESH_S = 1.0  # ask the controller at most this often
STALE_S = 30.0  # older answers are not used: hold the current count
PENDING_TIMEOUT_S = 10.0  # a fetch unanswered this long is abandoned and asked again


class TargetCache:
    """The controller's latest per-pool targets, fetched without blocking.

    ``start_fetch()`` begins one request and returns a ``concurrent.futures.Future``
    of ``{pool: target}`` (on Ray: ``actor.get_targets.remote().future()``); it may
    raise when the controller cannot be found (then no fetch is pending). ``get``
    never blocks and never raises. A fetch unanswered after ``pending_timeout_s``
    (a controller that hangs, or a reply lost with a restarted actor) is abandoned
    and counted as a failure, so one lost reply cannot freeze the pool's count.
    """

    def __init__(
        self,
        start_fetch: Callable[[], Future[Mapping[str, int]]],
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_s: float = REFRESH_S,
        stale_s: float = STALE_S,
        pending_timeout_s: float = PENDING_TIMEOUT_S,
    ) -> None:
        self._start_fetch = start_fetch
        self._clock = clock
        self.refresh_s = refresh_s
        self.stale_s = stale_s
        self.pending_timeout_s = pending_timeout_s
        self._pending: Future[Mapping[str, int]] | None = None
        self._asked_s = -float("inf")
        self._targets: dict[str, int] = {}
        self._answered_s = -float("inf")
        self.failures = 0
        self.policy_errors = 0  # plan_policy calls that raised and held the count

    def get(self, pool: str) -> int | None:
        """``pool``'s target from an answer at most ``stale_s`` old, else None."""
        now = self._clock()
        pending = self._pending
        if pending is not None and pending.done():
            self._pending = None
            try:
                answer = pending.result()
                self._targets = {str(k): int(v) for k, v in answer.items()}
                self._answered_s = now
            except Exception:
                self.failures += 1
        elif pending is not None and now - self._asked_s > self.pending_timeout_s:
            self._pending = None  # abandoned: its answer, if it ever comes, is dropped
            self.failures += 1
        if self._pending is None and now - self._asked_s >= self.refresh_s:
            self._asked_s = now
            try:
                self._pending = self._start_fetch()
            except Exception:
                self.failures += 1
        if now - self._answered_s > self.stale_s:
            return None
        return self._targets.get(pool)


def _ray_fetch() -> Future[Mapping[str, int]]:
    import ray

    actor = ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
    future: Future[Mapping[str, int]] = actor.get_targets.remote().future()
    return future


_CACHE = TargetCache(_ray_fetch)  # one per Serve controller process


def plan_policy(ctx: Any, cache: TargetCache | None = None) -> tuple[int, dict[str, Any]]:
    """Target replicas for ``ctx.deployment_name`` from the Plan (see module doc).
    Never raises: any error holds the current count (counted, logged once)."""
    cache = cache or _CACHE
    try:
        return _plan_policy(ctx, cache)
    except Exception:
        cache.policy_errors += 1
        if cache.policy_errors == 1:
            logger.exception("autoscaling policy failed; holding the current count (logged once)")
        current = getattr(ctx, "current_num_replicas", None)
        state = {"source": "hold: policy error"}
        return (current if isinstance(current, int) and current >= 0 else 1), state


def _plan_policy(ctx: Any, cache: TargetCache) -> tuple[int, dict[str, Any]]:
    state = dict(ctx.policy_state or {})
    current = int(ctx.current_num_replicas)
    target = cache.get(str(ctx.deployment_name))
    if target is None:
        target = current
        state["source"] = "hold: no recent answer from the controller"
    else:
        state["source"] = "plan"
    lo = int(getattr(ctx, "capacity_adjusted_min_replicas", 0))
    hi = int(getattr(ctx, "capacity_adjusted_max_replicas", max(target, 1)))
    return min(max(target, lo), hi), state
