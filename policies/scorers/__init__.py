"""Built-in scorers (importing this package registers them).

| type | score in [0, 1] |
|---|---|
| ``least_outstanding`` | fewer ongoing requests (min-max) |
| ``queue_depth`` | fewer queued requests (min-max) |
| ``kv_usage`` | 1 − KV-cache usage |
| ``prefix_cache`` | fraction of prompt prefix blocks already cached |
| ``dynamo_cost`` | Dynamo's prefill + decode block cost (min-max, lower cost better) |
| ``uncertainty`` | P(meet SLO) from the predicted latency distribution |
| ``tail_protect`` | fewer ongoing requests likely to end in the E2E tail (min-max) |
"""

from policies.scorers.load import KvUsageScorer, LeastOutstandingScorer, QueueDepthScorer
from policies.scorers.prefix import DynamoCostScorer, PrefixCacheScorer, PrefixTracker
from policies.scorers.tail import TailProtectScorer
from policies.scorers.uncertainty import UncertaintyScorer

__all__ = [
    "DynamoCostScorer",
    "KvUsageScorer",
    "LeastOutstandingScorer",
    "PrefixCacheScorer",
    "PrefixTracker",
    "QueueDepthScorer",
    "TailProtectScorer",
    "UncertaintyScorer",
]
