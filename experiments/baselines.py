"""Baseline routers for the simulator, and the lookup of routers by name.

``make_router(name, ...)`` returns ``policies.build_router(name)`` (``-`` read as
``_``: ``least-outstanding`` is the policies profile ``least_outstanding``) when the
policies package provides that name, else one of the local baselines here (so the
simulator runs before, and independently of, the policies package):

* ``round-robin``: cycle through the candidates.
* ``random``: uniform, from the injected generator.
* ``least-outstanding``: fewest requests on the replica (snapshot running + waiting,
  or this router's in-flight count if larger).
* ``oracle``: an upper bound on routing. It reads the engines' true state and knows
  every request's true output length, and sends a request where its predicted
  completion time is least (see ``OracleRouter``). Results can then be read as
  "how much of the possible gain a policy got".

Every router has the ``policies`` Router shape: ``rank(request, view, rng) -> list[int]``
(view indices, best first) and the ``on_routed`` / ``on_completed`` hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from replicas.engine_model import EngineModel
from replicas.telemetry import RequestInfo

LOCAL_ROUTERS = ("round-robin", "random", "least-outstanding", "oracle")


class RouterLike(Protocol):
    def rank(self, request: RequestInfo, view: Any, rng: np.random.Generator) -> list[int]: ...

    def on_routed(self, replica_id: str, request: RequestInfo) -> None: ...

    def on_completed(self, replica_id: str, request: RequestInfo) -> None: ...


class _Base:
    def on_routed(self, replica_id: str, request: RequestInfo) -> None:
        return None

    def on_completed(self, replica_id: str, request: RequestInfo) -> None:
        return None


class RoundRobin(_Base):
    def __init__(self) -> None:
        self._next = 0

    def rank(self, request: RequestInfo, view: Any, rng: np.random.Generator) -> list[int]:
        n = len(view.replica_ids)
        start = self._next % n
        self._next += 1
        return [(start + k) % n for k in range(n)]


class RandomRouter(_Base):
    def rank(self, request: RequestInfo, view: Any, rng: np.random.Generator) -> list[int]:
        return [int(i) for i in rng.permutation(len(view.replica_ids))]


class LeastOutstanding(_Base):
    """Fewest requests (ties broken at random, from ``rng``)."""

    def rank(self, request: RequestInfo, view: Any, rng: np.random.Generator) -> list[int]:
        load = np.maximum(np.asarray(view.running) + np.asarray(view.waiting), view.outstanding)
        tie = rng.random(load.size)
        return [int(i) for i in np.lexsort((tie, load))]


class OracleRouter(_Base):
    """Routes with perfect knowledge (an upper bound, not a deployable policy).

    For each replica it knows every queued and running request's remaining prefill
    tokens and remaining output tokens. The request's predicted E2E there is

        prefill backlog · c_prefill + Σ_t step_time(batch_t)

    where the batch it will decode in shrinks as the others finish: over its L
    output tokens the mean batch is 1 + Σ_j min(remaining_j, L) / L. Step time uses
    the replica's own perf model (mean, no noise). ``request.predicted_output_tokens``
    must carry the true output length (the simulator sets it for this router).
    """

    def __init__(self, engines: Sequence[EngineModel]) -> None:
        self.engines = list(engines)
        self._c_prefill = [e.perf.prefill_s_per_token() for e in self.engines]

    def rank(self, request: RequestInfo, view: Any, rng: np.random.Generator) -> list[int]:
        index = {e.replica_id: e for e in self.engines}
        cpref = dict(zip((e.replica_id for e in self.engines), self._c_prefill, strict=True))
        out = max(1, round(request.expected_output_tokens))
        cost = np.empty(len(view.replica_ids))
        for k, rid in enumerate(view.replica_ids):
            e = index[rid]
            backlog = request.prompt_tokens
            share = 0
            ctx = 0
            reqs = [*e.running, *e.waiting]
            for r in reqs:
                backlog += r.prompt + r.generated - r.computed
                share += min(r.output - r.generated, out)
                ctx += r.prompt + r.generated
            batch = 1.0 + share / out
            mean_ctx = (ctx + request.prompt_tokens) / (len(reqs) + 1)
            b = max(1, round(batch))
            step, _ = e.perf.mean_var(b, 0, 0, 0.0, b, int(b * mean_ctx))
            # a full engine queues the request until seats free up
            overflow = max(0.0, (len(reqs) + 1 - e.config.max_num_seqs) / e.config.max_num_seqs)
            cost[k] = backlog * cpref[rid] + out * step * (1.0 + overflow)
        tie = rng.random(cost.size)
        return [int(i) for i in np.lexsort((tie, cost))]


def make_router(name: str, engines: Sequence[EngineModel]) -> RouterLike:
    """The router called ``name`` (see module docstring); ``ValueError`` if unknown."""
    if name == "oracle":
        return OracleRouter(engines)
    try:
        import policies

        build = getattr(policies, "build_router", None)
        if build is not None:
            # policies names its profiles with underscores (least_outstanding)
            for candidate in dict.fromkeys((name, name.replace("-", "_"))):
                try:
                    router: RouterLike = build(candidate)
                    return router
                except ValueError:
                    continue
            if name not in LOCAL_ROUTERS:
                build(name)  # raises, listing the accepted profile names
    except ImportError:  # pragma: no cover - policies is part of the package
        pass
    local: dict[str, type[_Base]] = {
        "round-robin": RoundRobin,
        "random": RandomRouter,
        "least-outstanding": LeastOutstanding,
    }
    if name not in local:
        raise ValueError(f"unknown policy {name!r}; local baselines: {', '.join(LOCAL_ROUTERS)}")
    r: RouterLike = local[name]()  # type: ignore[assignment]
    return r
