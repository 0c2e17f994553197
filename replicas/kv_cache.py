"""Paged KV cache with prefix caching, for the engine model (vLLM v1's ``KVCacheManager``).

``num_blocks`` blocks of ``block_size`` tokens. Prefix caching works at the
granularity of the trace's prefix hashes (``unit_tokens`` tokens per hash, 512
for Mooncake ``hash_ids``): a finished unit of a prompt is registered under its
hash and shared (ref-counted) by later requests with the same leading hashes;
when no request references it, it stays cached but evictable, and it is
evicted only when the empty blocks run out. Which evictable unit goes first is
the ``EvictionPolicy``'s choice (``replicas.kv_eviction``: ``lru`` as vLLM, or
``reuse``, the lowest expected saving); a request's units are released tail
first, as vLLM frees a request's blocks in reverse, so a child goes before its
parent under LRU too. vLLM always recomputes at least the last prompt token,
and so do we.

The scheduler asks ``blocks_needed`` / ``alloc`` before scheduling tokens and
``free``s a request that finishes, is preempted or aborted. Invariant (tested
through the engine model): blocks in use never exceed ``num_blocks``.
"""

from __future__ import annotations

from replicas.kv_eviction import NO_PARENT, EvictionPolicy, build_eviction
from replicas.sim_request import SimRequest


class KVCacheManager:
    """Block accounting for one replica (see the module docstring).

    ``empty``: blocks neither used nor cached; ``active_units``: hash → refcount
    of shared prefix units in use; ``evictable``: cached, unreferenced units (the
    policy's mapping, read-only here). The scheduler reads ``empty`` and
    ``unit_blocks`` on its fast paths. ``eviction``: a ``replicas.kv_eviction``
    registry name (``ValueError`` if unknown)."""

    __slots__ = ("active_units", "block_size", "empty", "evictable", "num_blocks", "policy",
                 "unit_blocks", "unit_tokens")  # fmt: skip

    def __init__(
        self, num_blocks: int, block_size: int, unit_tokens: int, eviction: str = "lru"
    ) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.unit_tokens = unit_tokens
        self.unit_blocks = unit_tokens // block_size
        self.empty = num_blocks
        self.active_units: dict[int, int] = {}
        self.policy: EvictionPolicy = build_eviction(eviction, unit_tokens)
        # the policy's own mapping (an alias: len/in on the fast paths, no call)
        self.evictable = self.policy.evictable

    @property
    def used(self) -> int:
        """Blocks held by requests (private blocks and referenced prefix units)."""
        return self.num_blocks - self.empty - len(self.evictable) * self.unit_blocks

    def alloc(self, n: int) -> bool:
        """Take ``n`` blocks, evicting cached prefixes (the policy's choice) when the
        empty ones run out; False (nothing taken) when even that is not enough."""
        if n <= self.empty:
            self.empty -= n
            return True
        ub = self.unit_blocks
        if n > self.empty + len(self.evictable) * ub:
            return False
        evict = self.policy.evict
        while n > self.empty:
            evict()
            self.empty += ub
        self.empty -= n
        return True

    def free(self, r: SimRequest) -> None:
        """Give back ``r``'s private blocks; its prefix units lose a reference (and
        become evictable at zero), tail first (vLLM's order: under LRU the deepest
        unit is evicted first, never a parent before its child)."""
        self.empty += r.blocks
        r.blocks = 0
        au = self.active_units
        release = self.policy.release
        for h in reversed(r.units):
            c = au[h] - 1
            if c:
                au[h] = c
            else:
                del au[h]
                release(h)
        r.units = []

    def take_prefix(self, r: SimRequest) -> None:
        """Reference the cached leading units of ``r``'s prompt (prefix-cache hit)."""
        unit = self.unit_tokens
        au, ev = self.active_units, self.evictable
        reclaim = self.policy.reclaim
        hit = 0
        # at least the last prompt token is always recomputed
        for j, h in enumerate(r.hashes):
            if (j + 1) * unit >= r.prompt + r.generated:
                break
            if h in au:
                au[h] += 1
            elif h in ev:
                reclaim(h)
                au[h] = 1
            else:
                break
            r.units.append(h)
            hit += 1
        r.n_units = hit
        r.computed = hit * unit

    def record_lookup(self, r: SimRequest) -> None:
        """Tell the policy ``r``'s prompt units (its prefix hashes); once per
        request, at its first scheduling (a lookup retried while the request waits
        for blocks is not a second use)."""
        self.policy.accessed(r.hashes)

    def register_units(self, r: SimRequest) -> None:
        """Turn ``r``'s computed, hashed prompt units into shared cached units."""
        unit = self.unit_tokens
        au, ev = self.active_units, self.evictable
        registered = self.policy.registered
        while r.n_units < len(r.hashes) and (r.n_units + 1) * unit <= min(r.computed, r.prompt):
            j = r.n_units
            h = r.hashes[j]
            if h in au or h in ev or len(r.units) != j:
                break  # computed twice concurrently: keep ours private (vLLM dedups too)
            au[h] = 1
            registered(h, r.hashes[j - 1] if j else NO_PARENT, j + 1)
            r.units.append(h)
            r.blocks -= self.unit_blocks
            r.n_units += 1

    def blocks_needed(self, r: SimRequest, new_tokens: int) -> int:
        """Blocks ``r`` must add to hold ``new_tokens`` more tokens (<= 0: none)."""
        need = -(-(r.computed + new_tokens) // self.block_size)
        return need - len(r.units) * self.unit_blocks - r.blocks

    def cached_hashes(self, cap: int) -> frozenset[int]:
        """Up to ``cap`` prefix hashes this replica holds (referenced first, then
        evictable in release order; the most recent ``cap`` of that order)."""
        if not (self.active_units or self.evictable):
            return frozenset()
        keys = list(self.active_units) + list(self.evictable)
        return frozenset(keys[-cap:])
