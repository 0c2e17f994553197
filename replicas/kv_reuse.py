"""``ReuseEviction``: evict the cached prefix unit with the lowest expected saving.

The expected prefill a cached unit saves is (how likely it is to be hit again) ×
(what recomputing it would cost):

* **reuse**: the unit's popularity, an online count of the requests whose
  prompt contained it (hit or not: a prefix that keeps coming back is likely to
  come back again; on Mooncake's synthetic trace a unit seen once recurs with
  probability 0.42, one seen twice with 0.84), each decayed by half every
  ``halflife`` requests looked up on this replica (the clock is that request
  count, so the policy needs no time source and is deterministic). The count
  outlives the unit's eviction (a "ghost" entry), so a prefix recomputed after
  an eviction comes back with its history; at most ``max_tracked`` ghosts are
  kept (the least popular are dropped, in batches: amortized O(log n)).
* **cost**: prefill time of the unit's tokens at its position in the prompt:
  ``1 + (depth − ½)·unit_tokens / attention_tokens`` (relative units). The
  attention part grows with the context before the unit; ``attention_tokens``
  (default 24,576) is the context at which a 512-token chunk's attention costs
  as much as its linear layers, from the vidur Llama-2-7B profiles (H100: about
  26k tokens, A100: about 24k).

Only **leaves** are candidates: units none of whose cached children remain (a
child is useless without its parent, since a lookup stops at the first miss;
the children of an evictable unit are evictable too, because a request holds a
leading chain). So a parent always outlives its children, whatever the
scores. The marginal saving of a leaf is its own unit's; that of a parent
includes its subtree, which is why parents wait for their children.

Ties (equal score) go to the unit released first (LRU among equals).

Data structures: a min-heap of ``(score, release stamp, unit)`` with lazy
deletion (an entry is live while ``evictable[unit]`` holds its stamp); scores
are stored time-invariantly (log2 of the count scaled to tick 0, so a unit's
key never changes while it waits), and the heap is rebuilt when stale entries
outnumber live ones (amortized O(1) per stale entry). ``release``/``evict``
are O(log n), ``reclaim`` O(1), ``accessed`` O(units of the prompt) amortized.

.. code-block:: yaml

    model:
      kv_eviction: reuse
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

NO_PARENT = -1  # the parent of a prompt's first unit
DEFAULT_HALFLIFE = 64.0  # requests looked up on the replica (docs/simulator.md, "KV eviction")
DEFAULT_ATTENTION_TOKENS = 24576.0
DEFAULT_MAX_TRACKED = 65536  # ghost popularity entries (units not cached)


class ReuseEviction:
    """See the module docstring. ``halflife``: requests (> 0); ``unit_tokens``,
    ``attention_tokens``: tokens (> 0); ``max_tracked``: ghost entries (>= 0).
    Raises ``ValueError`` on bad values."""

    __slots__ = (
        "_attn", "_cost", "_heap", "_inv_half", "_kids", "_log", "_max_tracked", "_parent",
        "_seq", "_tick", "evictable",
    )  # fmt: skip

    def __init__(
        self,
        *,
        unit_tokens: int,
        halflife: float = DEFAULT_HALFLIFE,
        attention_tokens: float = DEFAULT_ATTENTION_TOKENS,
        max_tracked: int = DEFAULT_MAX_TRACKED,
    ) -> None:
        for name, v in (
            ("unit_tokens", unit_tokens),
            ("halflife", halflife),
            ("attention_tokens", attention_tokens),
        ):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"ReuseEviction: {name} must be > 0, got {v!r}")
        if max_tracked < 0:
            raise ValueError(f"ReuseEviction: max_tracked must be >= 0, got {max_tracked!r}")
        self._max_tracked = max_tracked
        self._inv_half = 1.0 / halflife
        self._attn = unit_tokens / attention_tokens
        self._tick = 0  # requests looked up so far (the decay clock)
        self._seq = 0  # release stamps
        self.evictable: dict[int, int] = {}  # unit → its release stamp
        self._heap: list[tuple[float, int, int]] = []
        # unit → log2(Σ 2^(tick_i / halflife)) over the requests that contained it;
        # cached units and up to ~2 × max_tracked ghosts
        self._log: dict[int, float] = {}
        self._cost: dict[int, float] = {}  # cached unit → log2(recompute cost)
        self._parent: dict[int, int] = {}
        self._kids: dict[int, int] = {}  # unit → cached children (absent: none)

    def score(self, h: int) -> float:
        """log2 of ``h``'s expected saving, up to a term shared by all units at any
        one time (comparable across units; higher is kept longer)."""
        return self._log[h] + self._cost[h]

    def registered(self, h: int, parent: int, depth: int) -> None:
        if h not in self._log:  # normally counted by ``accessed`` (unless pruned)
            self._log[h] = self._tick * self._inv_half
        self._cost[h] = math.log2(1.0 + (depth - 0.5) * self._attn)
        self._parent[h] = parent
        if parent != NO_PARENT:
            kids = self._kids
            kids[parent] = kids.get(parent, 0) + 1

    def accessed(self, units: Sequence[int]) -> None:
        self._tick += 1
        t = self._tick * self._inv_half
        log, ev = self._log, self.evictable
        n = len(log)
        for h in units:
            x = log.get(h)
            if x is None:
                log[h] = t
                n += 1
                continue
            # log2(2^x + 2^t) without overflow
            log[h] = (x if x > t else t) + math.log2(1.0 + 2.0 ** -abs(x - t))
            if h in ev and h not in self._kids:
                # cached but not taken (a prompt's last unit is always recomputed):
                # its key rose, so re-stamp it (the old heap entry goes stale)
                self._seq += 1
                ev[h] = self._seq
                self._push(h, self._seq)
        if n > 2 * self._max_tracked + len(self._cost):
            self._prune()

    def _prune(self) -> None:
        """Keep the cached units and the ``max_tracked`` most popular ghosts."""
        log, cost = self._log, self._cost
        ghosts = sorted((x, h) for h, x in log.items() if h not in cost)
        for _, h in ghosts[: len(ghosts) - self._max_tracked]:
            del log[h]

    def release(self, h: int) -> None:
        self._seq += 1
        self.evictable[h] = self._seq
        if h not in self._kids:
            self._push(h, self._seq)

    def reclaim(self, h: int) -> None:
        del self.evictable[h]  # its heap entry, if any, goes stale

    def evict(self) -> int:
        heap, ev = self._heap, self.evictable
        while True:
            if not heap:
                raise RuntimeError(
                    f"ReuseEviction: {len(ev)} evictable units but no leaf among them "
                    "(a unit was released before its children were registered?)"
                )
            _, stamp, h = heapq.heappop(heap)
            if ev.get(h) == stamp:
                break
        del ev[h]
        del self._cost[h]  # its popularity stays, as a ghost
        p = self._parent.pop(h)
        if p != NO_PARENT:
            kids = self._kids
            k = kids[p] - 1
            if k:
                kids[p] = k
            else:
                del kids[p]
                s = ev.get(p)
                if s is not None:  # the parent waited for its last child: a leaf now
                    self._push(p, s)
        return h

    def victim_reference(self) -> int | None:
        """The readable reference of ``evict``'s choice, by brute force (O(n), for
        tests): the evictable unit without cached children that has the lowest
        (score, release stamp); None when nothing is evictable."""
        leaves = [(self.score(h), s, h) for h, s in self.evictable.items() if h not in self._kids]
        return min(leaves)[2] if leaves else None

    def _push(self, h: int, stamp: int) -> None:
        heap = self._heap
        heapq.heappush(heap, (self._log[h] + self._cost[h], stamp, h))
        if len(heap) > 2 * len(self.evictable) + 64:  # mostly stale: rebuild
            ev = self.evictable
            heap[:] = [e for e in heap if ev.get(e[2]) == e[1]]
            heapq.heapify(heap)
