"""KV eviction policies (``replicas.kv_eviction``, ``replicas.kv_reuse``): the reuse
policy keeps a popular prefix that LRU drops, never lets a child outlive its
parent, breaks ties by release order, matches its brute-force reference, stays
bounded; unknown names are refused wherever they can be given."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.sim_config import PoolSetup
from orchestrator.config import parse_config
from replicas.engine_config import EngineConfig
from replicas.kv_cache import KVCacheManager
from replicas.kv_eviction import NO_PARENT, LruEviction, build_eviction
from replicas.kv_reuse import ReuseEviction
from replicas.sim_request import SimRequest

UNIT = 64  # tokens per prefix unit: 4 blocks of 16


def _serve(kv: KVCacheManager, i: int, hashes: tuple[int, ...]) -> int:
    """One request through the cache as the scheduler drives it (lookup, allocate,
    compute the prompt, register, finish); returns its prefix-hit tokens."""
    r = SimRequest(str(i), len(hashes) * UNIT + 1, 1, hashes, 0.0, i)
    kv.take_prefix(r)
    kv.record_lookup(r)
    hit = r.computed
    need = kv.blocks_needed(r, r.prompt - r.computed)
    assert kv.alloc(need)
    r.blocks += need
    r.computed = r.prompt
    kv.register_units(r)
    kv.free(r)
    return hit


def _cached_chains_are_whole(kv: KVCacheManager, parent: dict[int, int]) -> None:
    cached = set(kv.active_units) | set(kv.evictable)
    orphans = {h for h in cached if parent.get(h, NO_PARENT) not in (NO_PARENT, *cached)}
    assert not orphans, f"cached units whose parent was evicted: {orphans}"


def test_reuse_keeps_a_popular_prefix_that_lru_evicts() -> None:
    # 13 blocks: three 4-block units cached + 1 spare. P = (1,) is asked twice, then
    # two one-off 2-unit prompts pass through, then P again.
    pattern = [(1,), (1,), (10, 11), (20, 21), (1,)]
    hits = {}
    for name in ("lru", "reuse"):
        kv = KVCacheManager(num_blocks=13, block_size=16, unit_tokens=UNIT, eviction=name)
        hits[name] = [_serve(kv, i, h) for i, h in enumerate(pattern)]
    # LRU: (20, 21) needs 2 units' blocks and evicts 1 (released longest ago) and 11
    assert hits["lru"] == [0, UNIT, 0, 0, 0]
    # reuse: 1 was seen twice, 10 and 11 once: the one-offs go, P hits again
    assert hits["reuse"] == [0, UNIT, 0, 0, UNIT]


def test_children_never_outlive_their_parents() -> None:
    # a prefix tree (4 roots, chains of 1..5 units) asked at random, in a cache that
    # holds about 4 units: after every request each cached unit's parent is cached
    rng = np.random.default_rng(7)
    chains = [tuple(100 * root + d for d in range(1 + int(rng.integers(5)))) for root in range(4)]
    parent = {c[j]: (c[j - 1] if j else NO_PARENT) for c in chains for j in range(len(c))}
    for name in ("lru", "reuse"):
        kv = KVCacheManager(num_blocks=5 * 4 + 4, block_size=16, unit_tokens=UNIT, eviction=name)
        for i in range(300):
            c = chains[int(rng.integers(len(chains)))]
            _serve(kv, i, c[: 1 + int(rng.integers(len(c)))])
            _cached_chains_are_whole(kv, parent)


def test_a_costly_child_is_still_evicted_before_its_cheap_parent() -> None:
    # attention so costly that depth dominates: 3 (depth 3) outscores 9 (depth 1),
    # but once 9 is gone the chain 1 ← 2 ← 3 can only go tail first
    p = ReuseEviction(unit_tokens=UNIT, attention_tokens=1.0)
    p.accessed([1, 2, 3])
    p.accessed([9])
    for h, parent, depth in ((1, NO_PARENT, 1), (2, 1, 2), (3, 2, 3), (9, NO_PARENT, 1)):
        p.registered(h, parent, depth)
    for h in (1, 2, 3, 9):
        p.release(h)
    assert p.score(3) > p.score(9) and p.score(1) < p.score(3)
    assert [p.evict() for _ in range(4)] == [9, 3, 2, 1]
    assert not p.evictable


@pytest.mark.parametrize("name", ["lru", "reuse"])
def test_ties_go_to_the_unit_released_first(name: str) -> None:
    p = build_eviction(name, UNIT)
    p.accessed([5, 6])  # same request: same popularity, same depth
    p.registered(5, NO_PARENT, 1)
    p.registered(6, NO_PARENT, 1)
    p.release(6)
    p.release(5)
    assert [p.evict(), p.evict()] == [6, 5]


def test_evictions_match_the_brute_force_reference() -> None:
    # random workload on a prefix tree; before every eviction the heap's victim is
    # the reference's (lowest score, then earliest release, among leaves)
    rng = np.random.default_rng(3)
    chains = [tuple(1000 * root + d for d in range(1, 9)) for root in range(6)]

    class Checked(ReuseEviction):
        __slots__ = ("checked",)

        def evict(self) -> int:
            want = self.victim_reference()
            got = super().evict()
            assert got == want
            self.checked = getattr(self, "checked", 0) + 1
            return got

    kv = KVCacheManager(num_blocks=10 * 4 + 4, block_size=16, unit_tokens=UNIT, eviction="reuse")
    policy = Checked(unit_tokens=UNIT, halflife=8.0)
    kv.policy = policy
    kv.evictable = policy.evictable
    for i in range(400):
        c = chains[int(rng.integers(len(chains)))]
        _serve(kv, i, c[: 1 + int(rng.integers(len(c)))])
    assert policy.checked > 100


def test_ghost_popularity_survives_eviction_and_the_heap_stays_bounded() -> None:
    p = ReuseEviction(unit_tokens=UNIT, halflife=1e6)
    for _ in range(3):
        p.accessed([1])
    p.registered(1, NO_PARENT, 1)
    p.release(1)
    assert p.evict() == 1
    p.accessed([1, 2])  # 1 is recomputed with its history; 2 is new
    p.registered(1, NO_PARENT, 1)
    p.registered(2, NO_PARENT, 1)
    assert p.score(1) == pytest.approx(p.score(2) + 2.0, abs=1e-3)  # log2(4) vs log2(1)
    for _ in range(10_000):  # hit/release churn leaves stale heap entries behind
        p.reclaim(2) if 2 in p.evictable else p.release(2)
    assert len(p._heap) <= 2 * len(p.evictable) + 65


def test_ghosts_are_pruned_to_max_tracked() -> None:
    p = ReuseEviction(unit_tokens=UNIT, max_tracked=10)
    for i in range(1000):
        p.accessed([i, 5])  # 5 is the popular one
    assert len(p._log) <= 2 * 10 + 1 and 5 in p._log


def test_lru_is_vllms_free_queue() -> None:
    p = LruEviction()
    for h in (1, 2, 3):
        p.release(h)
    p.reclaim(2)
    p.release(2)
    assert [p.evict(), p.evict(), p.evict()] == [1, 3, 2]


def test_unknown_policies_and_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown KV eviction policy 'lfu'; known: lru, reuse"):
        build_eviction("lfu", UNIT)
    with pytest.raises(ValueError, match="kv_eviction 'lfu' is not a known policy"):
        EngineConfig(num_blocks=8, kv_eviction="lfu")
    with pytest.raises(ValueError, match="pool 'p': unknown KV eviction policy 'lfu'"):
        PoolSetup("p", "H100", 1, kv_eviction="lfu")
    with pytest.raises(ValueError, match="halflife must be > 0"):
        ReuseEviction(unit_tokens=UNIT, halflife=0.0)
    pools = [{"name": "p", "accelerator": "H100"}]
    with pytest.raises(ValueError, match=r"model\.kv_eviction.*unknown KV eviction policy 'lfu'"):
        parse_config({"model": {"kv_eviction": "lfu"}, "pools": pools}, "c.yaml")
    with pytest.raises(ValueError, match="kv_eviction 'reuse' needs engine: sim"):
        parse_config({"model": {"engine": "vllm", "kv_eviction": "reuse"}, "pools": pools})
    cfg = parse_config({"model": {"kv_eviction": "reuse"}, "pools": pools})
    assert cfg.model.kv_eviction == "reuse"
