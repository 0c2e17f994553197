"""Paged KV cache with prefix caching, for the engine model (vLLM v1's ``KVCacheManager``).

``num_blocks`` blocks of ``block_size`` tokens. Prefix caching works at the
granularity of the trace's prefix hashes (``unit_tokens`` tokens per hash, 512
for Mooncake ``hash_ids``): a finished unit of a prompt is registered under its
hash and shared (ref-counted) by later requests with the same leading hashes;
when no request references it, it stays cached but evictable (LRU), and it is
evicted only when the empty blocks run out. vLLM always recomputes at least the
last prompt token, and so do we.

The scheduler asks ``blocks_needed`` / ``alloc`` before scheduling tokens and
``free``s a request that finishes, is preempted or aborted. Invariant (tested
through the engine model): blocks in use never exceed ``num_blocks``.
"""

from __future__ import annotations

from collections import OrderedDict

from replicas.sim_request import SimRequest


class KVCacheManager:
    """Block accounting for one replica (see the module docstring).

    ``empty``: blocks neither used nor cached; ``active_units``: hash → refcount
    of shared prefix units in use; ``evictable``: cached, unreferenced units (LRU
    order). The scheduler reads ``empty`` and ``unit_blocks`` on its fast paths."""

    __slots__ = ("active_units", "block_size", "empty", "evictable", "num_blocks", "unit_blocks",
                 "unit_tokens")  # fmt: skip

    def __init__(self, num_blocks: int, block_size: int, unit_tokens: int) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.unit_tokens = unit_tokens
        self.unit_blocks = unit_tokens // block_size
        self.empty = num_blocks
        self.active_units: dict[int, int] = {}
        self.evictable: OrderedDict[int, None] = OrderedDict()

    @property
    def used(self) -> int:
        """Blocks held by requests (private blocks and referenced prefix units)."""
        return self.num_blocks - self.empty - len(self.evictable) * self.unit_blocks

    def alloc(self, n: int) -> bool:
        """Take ``n`` blocks, evicting least recently used cached prefixes when the
        empty ones run out; False (nothing taken) when even that is not enough."""
        if n <= self.empty:
            self.empty -= n
            return True
        ub = self.unit_blocks
        if n > self.empty + len(self.evictable) * ub:
            return False
        while n > self.empty:  # evict least recently used cached prefixes
            self.evictable.popitem(last=False)
            self.empty += ub
        self.empty -= n
        return True

    def free(self, r: SimRequest) -> None:
        """Give back ``r``'s private blocks; its prefix units lose a reference (and
        become evictable at zero)."""
        self.empty += r.blocks
        r.blocks = 0
        au = self.active_units
        for h in r.units:
            c = au[h] - 1
            if c:
                au[h] = c
            else:
                del au[h]
                self.evictable[h] = None
        r.units = []

    def take_prefix(self, r: SimRequest) -> None:
        """Reference the cached leading units of ``r``'s prompt (prefix-cache hit)."""
        unit = self.unit_tokens
        au, ev = self.active_units, self.evictable
        hit = 0
        # at least the last prompt token is always recomputed
        for j, h in enumerate(r.hashes):
            if (j + 1) * unit >= r.prompt + r.generated:
                break
            if h in au:
                au[h] += 1
            elif h in ev:
                del ev[h]
                au[h] = 1
            else:
                break
            r.units.append(h)
            hit += 1
        r.n_units = hit
        r.computed = hit * unit

    def register_units(self, r: SimRequest) -> None:
        """Turn ``r``'s computed, hashed prompt units into shared cached units."""
        unit = self.unit_tokens
        au, ev = self.active_units, self.evictable
        while r.n_units < len(r.hashes) and (r.n_units + 1) * unit <= min(r.computed, r.prompt):
            h = r.hashes[r.n_units]
            if h in au or h in ev or len(r.units) != r.n_units:
                break  # computed twice concurrently: keep ours private (vLLM dedups too)
            au[h] = 1
            r.units.append(h)
            r.blocks -= self.unit_blocks
            r.n_units += 1

    def blocks_needed(self, r: SimRequest, new_tokens: int) -> int:
        """Blocks ``r`` must add to hold ``new_tokens`` more tokens (<= 0: none)."""
        need = -(-(r.computed + new_tokens) // self.block_size)
        return need - len(r.units) * self.unit_blocks - r.blocks

    def cached_hashes(self, cap: int) -> frozenset[int]:
        """Up to ``cap`` prefix hashes this replica holds (referenced first, then
        evictable in LRU order; the most recent ``cap`` of that order)."""
        if not (self.active_units or self.evictable):
            return frozenset()
        keys = list(self.active_units) + list(self.evictable)
        return frozenset(keys[-cap:])
