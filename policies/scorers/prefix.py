"""Prefix-cache scorers: reuse KV blocks a replica already holds.

A request's ``prefix_hashes`` are the chained hashes of its prompt blocks (as
vLLM's prefix cache keys them), so a replica can reuse block k only if it holds
blocks 0..k: the overlap is the number of *leading* hashes the replica has.

What a replica holds is the union of what it reports (``cached_prefix_hashes``
in its snapshot, bounded by the replica) and what this router sent it since
(a bounded LRU per replica, updated in ``on_routed``), as llm-d's approximate
prefix index and Ray's PrefixCacheAffinityRouter track routed prompts.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from pydantic import Field

from policies.base import Scorer, min_max_lower_is_better
from policies.params import PolicyParams
from policies.registry import SCORERS
from policies.view import IntArray, ReplicaView
from replicas.telemetry import RequestInfo
from uncertainty.validation import FloatArray


class PrefixTracker:
    """Router-local memory of the block hashes sent to each replica (LRU,
    at most ``max_blocks`` per replica; the oldest are forgotten first, as a
    replica's cache evicts least recently used blocks).

    ``overlap`` only walks the replicas that hold the request's *first* block
    (no other can reuse anything): one set lookup per replica, then a walk along
    the prompt for the few holders. This relies on chained block hashes (as
    vLLM's): a first block's hash never appears as a later block's.
    """

    def __init__(self, max_blocks: int = 4096) -> None:
        self.max_blocks = max_blocks
        self._sent: dict[str, OrderedDict[int, None]] = {}
        self._first: dict[int, set[str]] = {}  # first block hash → replicas sent it

    def record(self, replica_id: str, hashes: tuple[int, ...]) -> None:
        if not hashes or self.max_blocks == 0:
            return
        lru = self._sent.setdefault(replica_id, OrderedDict())
        for h in hashes:
            lru[h] = None
            lru.move_to_end(h)
        self._first.setdefault(hashes[0], set()).add(replica_id)
        while len(lru) > self.max_blocks:
            old, _ = lru.popitem(last=False)
            holders = self._first.get(old)
            if holders is not None:
                holders.discard(replica_id)
                if not holders:
                    del self._first[old]

    def overlap(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> FloatArray:
        """Leading prefix blocks of ``request`` each candidate holds (blocks)."""
        hashes = request.prefix_hashes
        out = np.zeros(candidates.size)
        if not hashes:
            return out
        h0 = hashes[0]
        cached = view.cached_prefixes
        cand = candidates.tolist()
        # positions (in candidates) of replicas holding block 0, by report or by routing
        pos = [j for j, i in enumerate(cand) if h0 in cached[i]]
        sent_to = self._first.get(h0)
        if sent_to:
            where = {i: j for j, i in enumerate(cand)} if len(cand) != view.size else None
            for rid in sent_to:
                i = view.find(rid)
                if i is None:
                    continue
                j = i if where is None else where.get(i)
                if j is not None and j not in pos:
                    pos.append(j)
        for j in pos:
            i = cand[j]
            held = cached[i]
            sent = self._sent.get(view.replica_ids[i])
            k = 0
            for h in hashes:
                if h in held or (sent is not None and h in sent):
                    k += 1
                else:
                    break
            out[j] = k
        return out


class PrefixCacheParams(PolicyParams):
    max_tracked_blocks: int = Field(default=4096, ge=0)


@SCORERS.register("prefix_cache")
class PrefixCacheScorer(Scorer):
    """Score = fraction of the request's prefix blocks the replica holds, counted
    from the first block (llm-d's prefix-cache scorer). 0 for every replica when
    the request has no prefix hashes.

    YAML::

        scorers:
          - {type: prefix_cache, weight: 1.0, params: {max_tracked_blocks: 4096}}
    """

    Params = PrefixCacheParams

    def __init__(self, max_tracked_blocks: int = 4096) -> None:
        self.tracker = PrefixTracker(max_tracked_blocks)

    @classmethod
    def from_params(cls, params: PrefixCacheParams) -> PrefixCacheScorer:
        return cls(params.max_tracked_blocks)

    def score(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> FloatArray:
        n = len(request.prefix_hashes)
        if n == 0:
            return np.zeros(candidates.size)
        out: FloatArray = self.tracker.overlap(request, view, candidates) / n
        return out

    def on_routed(self, replica_id: str, request: RequestInfo) -> None:
        self.tracker.record(replica_id, request.prefix_hashes)


class DynamoCostParams(PolicyParams):
    overlap_score_weight: float = Field(default=1.0, ge=0.0)
    max_tracked_blocks: int = Field(default=4096, ge=0)


@SCORERS.register("dynamo_cost")
class DynamoCostScorer(Scorer):
    """NVIDIA Dynamo's KV-router cost, lower is better:

        cost = overlap_score_weight · new prefill blocks + potential decode blocks

    new prefill blocks = ⌈prompt / block size⌉ − overlap blocks; potential decode
    blocks = KV blocks in use + the request's prompt blocks. Scored min-max over
    the candidates (1 = cheapest), which keeps Dynamo's argmin (temperature 0).

    YAML::

        scorers:
          - {type: dynamo_cost, weight: 1.0, params: {overlap_score_weight: 1.0}}
    """

    Params = DynamoCostParams

    def __init__(self, overlap_score_weight: float = 1.0, max_tracked_blocks: int = 4096) -> None:
        self.overlap_score_weight = overlap_score_weight
        self.tracker = PrefixTracker(max_tracked_blocks)

    @classmethod
    def from_params(cls, params: DynamoCostParams) -> DynamoCostScorer:
        return cls(params.overlap_score_weight, params.max_tracked_blocks)

    def score(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> FloatArray:
        blocks = np.ceil(request.prompt_tokens / view.block_size[candidates])
        overlap = np.minimum(self.tracker.overlap(request, view, candidates), blocks)
        cost = (
            self.overlap_score_weight * (blocks - overlap)
            + view.kv_blocks_used[candidates]
            + blocks
        )
        return min_max_lower_is_better(cost)

    def on_routed(self, replica_id: str, request: RequestInfo) -> None:
        self.tracker.record(replica_id, request.prefix_hashes)
