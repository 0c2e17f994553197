"""KVCacheManager: blocks are counted exactly, shared prefix units are ref-counted,
and cached units are evicted least recently used (children before parents), only
when empty blocks run out."""

from __future__ import annotations

from replicas.kv_cache import KVCacheManager
from replicas.sim_request import SimRequest


def _req(rid: str, prompt: int, hashes: tuple[int, ...] = ()) -> SimRequest:
    return SimRequest(rid, prompt, 8, hashes, 0.0, -1)


def test_alloc_and_free_count_blocks_and_refuse_what_does_not_fit() -> None:
    kv = KVCacheManager(num_blocks=10, block_size=16, unit_tokens=64)
    r = _req("a", 100)
    need = kv.blocks_needed(r, 100)
    assert need == 7  # ceil(100 / 16)
    assert kv.alloc(need) and kv.used == 7
    r.blocks += need
    assert not kv.alloc(4) and kv.used == 7  # refused: nothing taken
    kv.free(r)
    assert kv.used == 0 and kv.empty == 10 and r.blocks == 0


def test_prefix_units_are_shared_then_evicted_lru_only_when_needed() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=16, unit_tokens=64)  # 4 blocks a unit
    first = _req("a", 200, hashes=(1, 2, 3))
    assert kv.alloc(kv.blocks_needed(first, 200))
    first.blocks = 13
    first.computed = 200
    kv.register_units(first)  # units 1..3 (192 tokens) become shared
    assert first.units == [1, 2, 3] and first.blocks == 1
    second = _req("b", 200, hashes=(1, 2, 9))
    kv.take_prefix(second)  # hits 1 and 2, misses 9
    assert second.units == [1, 2] and second.computed == 128
    assert kv.active_units == {1: 2, 2: 2, 3: 1}
    kv.free(first)
    kv.free(second)
    # released tail first (vLLM frees a request's blocks in reverse): 3, then 2, 1
    assert list(kv.evictable) == [3, 2, 1] and kv.used == 0
    assert kv.cached_hashes(2) == frozenset({1, 2})
    assert kv.alloc(3) and list(kv.evictable) == [3, 2, 1]  # empty blocks suffice
    assert kv.alloc(4) and list(kv.evictable) == [2, 1]  # evicts the oldest unit
