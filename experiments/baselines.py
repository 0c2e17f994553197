"""The simulator's own routing baseline, and the lookup of routers by name.

``make_router(name, engines)`` returns ``policies.build_router(name)`` (``-`` read
as ``_``: ``least-outstanding`` is the policies profile ``least_outstanding``),
except for ``oracle``, which only the simulator can run: an upper bound on
routing. It reads the engines' true state and knows every request's true output
length, and sends a request where its predicted completion time is least (see
``OracleRouter``). Results can then be read as "how much of the possible gain a
policy got".

Every router has the ``policies`` Router shape: ``rank(request, view, rng) -> list[int]``
(view indices, best first) and the ``on_routed`` / ``on_completed`` hooks
(``orchestrator.gateway.RouterLike``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from orchestrator.gateway import RouterLike
from policies import build_router
from replicas.engine_model import EngineModel
from replicas.telemetry import RequestInfo


class OracleRouter:
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

    def on_routed(self, replica_id: str, request: RequestInfo) -> None:
        return None

    def on_completed(self, replica_id: str, request: RequestInfo) -> None:
        return None

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
    """The router called ``name`` (see module docstring); ``ValueError`` listing
    the accepted profile names if unknown."""
    if name == "oracle":
        return OracleRouter(engines)
    alias = name.replace("-", "_")  # policies names its profiles with underscores
    for candidate in dict.fromkeys((name, alias)):
        try:
            return build_router(candidate)
        except ValueError as exc:
            error = exc
    raise ValueError(f"{error}; simulator only: oracle") from None
