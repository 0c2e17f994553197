"""Serve custom autoscaling policy: replica counts follow the controller's Plan.

``AutoscalingConfig(policy=AutoscalingPolicy(policy_function=
"orchestrator.autoscale:plan_policy"))`` on each pool deployment. Serve calls the
policy inside its controller's control loop (every ~0.1 s, per deployment), so the
policy never blocks: it answers from ``TargetCache``, which asks the Cascade
controller for its per-pool targets in the background at most once per
``REFRESH_S`` and takes the answer on a later call. Targets change at the
allocator's pace (``loops.allocation_period_s``, 30 s by default), so a second
of lag costs nothing. Without an answer to a question asked less than
``STALE_S`` ago (controller missing, restarting or slow) the pool holds: the
policy returns Serve's standing target. Serve clips the result to the
deployment's min/max; a policy that raises (a bad context, a bad answer) holds
too, counted in ``TargetCache.policy_errors`` and logged once. A scale-down
drains: Serve stops routing to a replica it removes and waits for its ongoing
requests (``graceful_shutdown_timeout_s``).

How Serve (Ray 2.60, ``ray/serve/autoscaling_policy.py``) treats the answer, and
why a hold is the *target*, not the running count: the returned count goes
through Serve's wrapper (scaling factors relative to the running count, then
``upscale_delay_s`` / ``downscale_delay_s``, both 0 in ``orchestrator.app``, against
``ctx.target_num_replicas``), and any difference from the standing target is
applied at once. ``ctx.current_num_replicas`` is the RUNNING count, which lags the
target throughout a transition, so "holding" at it was an order to scale to it:
it stopped replicas that were still starting, and re-added one that was draining.

Serve pickles the policy *by value* (``AutoscalingPolicy.serialize_policy``:
``cloudpickle.register_pickle_by_value`` on this module), module globals
included: ``TargetCache`` pickles as its settings only, so each copy in the Serve
controller starts empty, never with the deploying process's answers (nor fails
on its in-flight fetch, which cannot be pickled).

Each fetch carries what the policy saw per pool (Serve's running count and
target, the answer, what it returned); the controller shows it in ``status()``
under ``autoscaler``: whether the policy still asks, and what Serve did with the
last answer.

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
STALE_S = 30.0  # an answer to a question older than this is not used: hold
PENDING_TIMEOUT_S = 10.0  # a fetch unanswered this long gets a new one beside it
MAX_PENDING = 4  # fetches in flight at most (a slow controller is not flooded)

Views = Mapping[str, Mapping[str, Any]]
StartFetch = Callable[[Views], "Future[Mapping[str, int]]"]


class TargetCache:
    """The controller's latest per-pool targets, fetched without blocking.

    ``start_fetch(views)`` begins one request and returns a
    ``concurrent.futures.Future`` of ``{pool: target}`` (on Ray:
    ``actor.get_targets.remote(views).future()``); ``views`` is what ``note``
    recorded per pool, for the controller's status. It may raise when the
    controller cannot be found (then no fetch starts). ``get`` never blocks and
    never raises.

    A fetch unanswered after ``pending_timeout_s`` is counted as a failure and a
    new one starts beside it (``max_pending`` in flight at most), so one lost
    reply cannot freeze the pool's count; the slow one's answer is still used if
    it comes while fresh. The newest *question's* answer wins, and an answer's age
    counts from when it was asked: a slow controller's reply is never mistaken for
    a newer one. A fetch older than ``stale_s`` is dropped.
    """

    def __init__(
        self,
        start_fetch: StartFetch,
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_s: float = REFRESH_S,
        stale_s: float = STALE_S,
        pending_timeout_s: float = PENDING_TIMEOUT_S,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._start_fetch = start_fetch
        self._clock = clock
        self.refresh_s = refresh_s
        self.stale_s = stale_s
        self.pending_timeout_s = pending_timeout_s
        self.max_pending = max_pending
        self._pending: list[tuple[float, Future[Mapping[str, int]]]] = []  # (asked_s, reply)
        self._asked_s = -float("inf")  # when the last fetch started (or failed to)
        self._targets: dict[str, int] = {}
        self._answer_asked_s = -float("inf")  # when the answer in use was asked for
        self._views: dict[str, dict[str, Any]] = {}
        self.failures = 0
        self.policy_errors = 0  # plan_policy calls that raised and held the count

    # Serve pickles the policy by value, this module's globals with it (module doc)
    def __getstate__(self) -> dict[str, Any]:
        return {
            "start_fetch": self._start_fetch,
            "clock": self._clock,
            "refresh_s": self.refresh_s,
            "stale_s": self.stale_s,
            "pending_timeout_s": self.pending_timeout_s,
            "max_pending": self.max_pending,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        settings = dict(state)
        TargetCache.__init__(self, settings.pop("start_fetch"), **settings)

    def note(self, pool: str, view: Mapping[str, Any]) -> None:
        """What the policy saw and answered for ``pool``; sent with the next fetch."""
        self._views[pool] = dict(view)

    def get(self, pool: str) -> int | None:
        """``pool``'s target from an answer asked for at most ``stale_s`` ago, else None."""
        now = self._clock()
        self._collect(now)
        youngest = max((asked for asked, _ in self._pending), default=-float("inf"))
        due = now - self._asked_s >= self.refresh_s
        if due and now - youngest > self.pending_timeout_s:
            if self._pending:
                self.failures += 1  # the youngest fetch is overdue: ask again beside it
            if len(self._pending) >= self.max_pending:
                self._pending.pop(0)  # the oldest makes room; its answer is dropped
            self._asked_s = now
            try:
                self._pending.append((now, self._start_fetch(dict(self._views))))
            except Exception:
                self.failures += 1
        if now - self._answer_asked_s > self.stale_s:
            return None
        return self._targets.get(pool)

    def _collect(self, now: float) -> None:
        """Take the answers that came; drop the failed and the hopelessly old."""
        waiting: list[tuple[float, Future[Mapping[str, int]]]] = []
        for asked, reply in self._pending:
            if not reply.done():
                if now - asked <= self.stale_s:
                    waiting.append((asked, reply))
                continue  # older than any answer we would use: dropped
            try:
                targets = {str(k): int(v) for k, v in reply.result().items()}
            except Exception:
                self.failures += 1
                continue
            if asked > self._answer_asked_s:  # an older question's answer never wins
                self._targets, self._answer_asked_s = targets, asked
        self._pending = waiting


def report_view(view: Mapping[Any, Any]) -> dict[str, Any]:
    """A policy's per-pool report as the controller keeps it for ``status``: at
    most 8 entries, str keys (32 chars), values int / str (80 chars) / None; any
    other value is left out (the report comes over an open read)."""
    out: dict[str, Any] = {}
    for key, value in list(view.items())[:8]:
        if isinstance(value, bool) or not isinstance(value, int | str | None):
            continue
        out[str(key)[:32]] = value[:80] if isinstance(value, str) else value
    return out


def _ray_fetch(views: Views) -> Future[Mapping[str, int]]:
    import ray

    actor = ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
    future: Future[Mapping[str, int]] = actor.get_targets.remote(views).future()
    return future


_CACHE = TargetCache(_ray_fetch)  # one per copy of the policy (module doc)


def plan_policy(ctx: Any, cache: TargetCache | None = None) -> tuple[int, dict[str, Any]]:
    """Target replicas for ``ctx.deployment_name`` from the Plan (see module doc).
    Never raises: any error holds Serve's standing target (counted, logged once)."""
    cache = cache or _CACHE
    try:
        return _plan_policy(ctx, cache)
    except Exception:
        cache.policy_errors += 1
        if cache.policy_errors == 1:
            logger.exception("autoscaling policy failed; holding the current target (logged once)")
        held = 1
        for name in ("target_num_replicas", "current_num_replicas"):
            value = getattr(ctx, name, None)
            if isinstance(value, int) and value >= 0:
                held = value
                break
        _report_error(ctx, cache, held)
        return held, {"source": "hold: policy error"}


def _report_error(ctx: Any, cache: TargetCache, held: int) -> None:
    """Let the controller see the failure (``status()["autoscaler"]``): note it
    and ride on the cache's next fetch. Never raises: the hold must stand even
    when the context or the cache is what failed."""
    try:
        pool = str(ctx.deployment_name)
        cache.note(pool, {"returned": held, "source": "hold: policy error",
                          "policy_errors": cache.policy_errors})  # fmt: skip
        cache.get(pool)  # starts a fetch when one is due; its answer is not used
    except Exception:
        pass


def _plan_policy(ctx: Any, cache: TargetCache) -> tuple[int, dict[str, Any]]:
    state = dict(ctx.policy_state or {})
    pool = str(ctx.deployment_name)
    running = int(ctx.current_num_replicas)
    standing = getattr(ctx, "target_num_replicas", None)
    standing = int(standing) if standing is not None else running  # Serve's target
    answer = cache.get(pool)
    if answer is None:
        target = standing
        state["source"] = "hold: no recent answer from the controller"
    else:
        target = answer
        state["source"] = "plan"
    lo = int(getattr(ctx, "capacity_adjusted_min_replicas", 0))
    hi = int(getattr(ctx, "capacity_adjusted_max_replicas", max(target, 1)))
    decided = min(max(target, lo), hi)
    cache.note(
        pool,
        {"running": running, "serve_target": standing, "answer": answer,
         "returned": decided, "source": state["source"]},
    )  # fmt: skip
    return decided, state
