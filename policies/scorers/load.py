"""Load scorers: in-flight requests, queue depth, KV-cache usage."""

from __future__ import annotations

from policies.base import Scorer, min_max_lower_is_better
from policies.registry import SCORERS
from policies.view import IntArray, ReplicaView
from replicas.telemetry import RequestInfo
from uncertainty.validation import FloatArray


@SCORERS.register("least_outstanding")
class LeastOutstandingScorer(Scorer):
    """Fewer ongoing requests is better: ongoing = max(snapshot running +
    waiting, this router's in-flight count) (see ``ReplicaView.ongoing``),
    min-max normalised over the candidates (1 = least loaded).

    With the ``max_score`` picker this is least-outstanding-requests; with
    ``pow2`` it is Ray Serve's power of two choices on queue length.

    YAML::

        scorers:
          - {type: least_outstanding, weight: 1.0}
    """

    def score(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> FloatArray:
        return min_max_lower_is_better(view.ongoing[candidates])


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
