"""Which cached prefix unit the KV cache evicts: the interface, LRU, and the registry.

The engine model's ``KVCacheManager`` (``replicas.kv_cache``) keeps finished
prompt units cached after their last reference drops; when it needs blocks and
the empty ones run out it asks its ``EvictionPolicy`` for a victim. A policy
sees every event that could inform the choice:

* ``registered(h, parent, depth)``: unit ``h`` (the ``depth``-th unit of a prompt,
  1-based; ``parent`` the unit before it, ``NO_PARENT`` at depth 1) is newly
  cached, referenced by the request that computed it;
* ``accessed(hashes)``: one request's prompt units (all its prefix hashes, cached
  or not), once per request, at its first scheduling;
* ``release(h)``: ``h``'s last reference dropped: it is now evictable;
* ``reclaim(h)``: a hit on an evictable ``h``: referenced again, not evictable;
* ``evict()``: remove one evictable unit and return it (the manager then frees
  its blocks); only called while ``evictable`` is not empty.

``evictable`` is the policy's own mapping of the evictable units; the manager
reads ``len`` and ``in`` on it on its fast paths and never writes it.

Contract shared by the policies: a unit is never evicted while a cached child of
it is still evictable (a child is useless without its parent: a lookup stops at
the first miss). vLLM gets this from freeing a request's blocks tail first; the
manager releases units tail first, so LRU keeps it, and ``reuse`` enforces it.

Registry: ``EVICTION_POLICIES`` maps the config's ``model.kv_eviction`` names to
factories; ``build_eviction`` raises ``ValueError`` naming the known ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from replicas.kv_reuse import NO_PARENT, ReuseEviction

__all__ = [
    "EVICTION_POLICIES",
    "NO_PARENT",
    "EvictionPolicy",
    "LruEviction",
    "ReuseEviction",
    "build_eviction",
]


class EvictionPolicy(Protocol):
    """Chooses which evictable prefix unit goes first (see the module docstring)."""

    @property
    def evictable(self) -> Mapping[int, object]: ...

    def registered(self, h: int, parent: int, depth: int) -> None: ...

    def accessed(self, hashes: Sequence[int]) -> None: ...

    def release(self, h: int) -> None: ...

    def reclaim(self, h: int) -> None: ...

    def evict(self) -> int: ...


class LruEviction:
    """Least recently released first (vLLM v1's free-block queue). O(1) per event.

    .. code-block:: yaml

        model:
          kv_eviction: lru
    """

    __slots__ = ("evictable",)

    def __init__(self) -> None:
        # release order: the front is the least recently used
        self.evictable: OrderedDict[int, None] = OrderedDict()

    def registered(self, h: int, parent: int, depth: int) -> None:
        pass

    def accessed(self, hashes: Sequence[int]) -> None:
        pass

    def release(self, h: int) -> None:
        self.evictable[h] = None

    def reclaim(self, h: int) -> None:
        del self.evictable[h]

    def evict(self) -> int:
        return self.evictable.popitem(last=False)[0]


EVICTION_POLICIES: dict[str, Callable[[int], EvictionPolicy]] = {
    "lru": lambda unit_tokens: LruEviction(),
    "reuse": lambda unit_tokens: ReuseEviction(unit_tokens=unit_tokens),
}


def build_eviction(name: str, unit_tokens: int) -> EvictionPolicy:
    """The policy registered as ``name`` for units of ``unit_tokens`` tokens.
    Raises ``ValueError`` naming the known policies for an unknown name."""
    factory = EVICTION_POLICIES.get(name)
    if factory is None:
        known = ", ".join(sorted(EVICTION_POLICIES))
        raise ValueError(f"unknown KV eviction policy {name!r}; known: {known}")
    return factory(unit_tokens)
