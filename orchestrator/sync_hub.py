"""``SyncHub``: one controller round trip per period for every consumer in a process.

The ingress replica's process holds the ingress's ``Gateway`` *and* one
``CascadeRequestRouter`` per pool handle (Serve runs a deployment's router in the
process that owns the handle). Each used to call the controller's sync every
250 ms, so the ingress process alone made (pools + 1) × 4 actor calls a second,
and on a 2-core host every actor call (~1-2 ms of Ray's native CPU on both
sides) is CPU taken from the engines (docs/benchmarks.md, "Serving path"). The
hub makes one call per period for all of them, carrying every consumer's latest
``RouterReport`` and answering everyone from the same ``RouterSync``.

Never blocks and never raises on the consumer's side, like ``autoscale.TargetCache``:
``poll()`` starts a fetch when the last answer is older than ``period_s`` and none
is pending, and returns the latest answer with a sequence number (a consumer
applies an answer once, when the number changes). Consumers live on different
event loops (the ingress's, Serve's router loop), so the state is guarded by a
lock, and the fetch is a ``concurrent.futures.Future`` (on Ray:
``ObjectRef.future()``), polled rather than awaited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future

from orchestrator.contracts import RouterReport, RouterSync

# start_fetch(reports) begins one controller call; it may raise (no controller)
StartFetch = Callable[[Mapping[str, RouterReport]], "Future[RouterSync]"]


class SyncHub:
    """See the module docstring.

    Args:
        start_fetch: begins one call with every consumer's latest report and
            returns the future of the controller's ``RouterSync``; raising means
            no call was started (e.g. the controller is not found).
        on_failure: called after a failed fetch or ``start_fetch`` error, e.g. to
            drop a cached actor handle so the next fetch looks it up again.
        period_s: the least time between two fetches (s).
        clock: monotonic seconds (injected in tests).
    """

    def __init__(
        self,
        start_fetch: StartFetch,
        *,
        on_failure: Callable[[], object] | None = None,
        period_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s!r}")
        self._start_fetch = start_fetch
        self._on_failure = on_failure
        self.period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._reports: dict[str, RouterReport] = {}
        self._pending: Future[RouterSync] | None = None
        self._asked_s = -float("inf")
        self._state: RouterSync | None = None
        self._seq = 0  # bumped on every answer
        self.fetches = 0
        self.failures = 0

    def report(self, consumer_id: str, report: RouterReport) -> None:
        """Keep ``consumer_id``'s latest report; it goes with the next fetch."""
        with self._lock:
            self._reports[consumer_id] = report

    def poll(self) -> tuple[RouterSync | None, int]:
        """The latest answer (None before the first) and its sequence number
        (0 before the first); starts a fetch when one is due."""
        failed = False
        with self._lock:
            now = self._clock()
            pending = self._pending
            if pending is not None and pending.done():
                self._pending = None
                try:
                    self._state = pending.result()
                    self._seq += 1
                except Exception:  # controller died or restarting: keep the last answer
                    self.failures += 1
                    failed = True
            if self._pending is None and now - self._asked_s >= self.period_s:
                self._asked_s = now
                try:
                    self._pending = self._start_fetch(dict(self._reports))
                    self.fetches += 1
                except Exception:
                    self.failures += 1
                    failed = True
            state, seq = self._state, self._seq
        if failed and self._on_failure is not None:
            self._on_failure()
        return state, seq


class RayControllerFetch:
    """``start_fetch`` for a ``SyncHub`` on Ray: ``ControllerActor.sync`` on the
    named actor, looked up lazily and again after a failure (``reset``)."""

    def __init__(self, name: str, namespace: str) -> None:
        self.name = name
        self.namespace = namespace
        self._actor: object | None = None

    def __call__(self, reports: Mapping[str, RouterReport]) -> Future[RouterSync]:
        import ray

        if self._actor is None:  # ValueError when there is none: the hub counts it
            self._actor = ray.get_actor(self.name, namespace=self.namespace)
        future: Future[RouterSync] = self._actor.sync.remote(dict(reports)).future()  # type: ignore[attr-defined]
        return future

    def reset(self) -> None:
        self._actor = None


_HUBS: dict[tuple[str, str], SyncHub] = {}
_HUBS_LOCK = threading.Lock()


def process_hub(name: str, namespace: str, period_s: float) -> SyncHub:
    """This process's hub for the controller ``namespace/name`` (created on first
    use with ``period_s``; later callers share it, whatever period they ask)."""
    with _HUBS_LOCK:
        hub = _HUBS.get((name, namespace))
        if hub is None:
            fetch = RayControllerFetch(name, namespace)
            hub = SyncHub(fetch, on_failure=fetch.reset, period_s=period_s)
            _HUBS[(name, namespace)] = hub
        return hub
