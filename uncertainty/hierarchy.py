"""Hierarchical aggregation: token → request → batch → replica → pool → cluster.

A ``Hierarchy`` is a tree of ``Summary`` nodes addressed by a path of keys under
the cluster root, e.g. ``("h100", "replica-3", "w17", "req-42")``: pool, replica,
batch window, request. Token samples are observed at a leaf; every node answers
mean / std / quantiles of all samples beneath it, computed by exactly merging its
children (moments exactly, quantiles within the sketch's α).

Memory stays bounded: a node holds one ``Summary`` (constant size) plus its
children, and transient nodes (a finished request, a closed batch window) are
``close``d: folded into their parent's own summary and dropped. Merged results are
cached per node and invalidated along the path on every change, so reading the
cluster summary after one replica changed costs one merge per level.

A "batch" is a scheduling window of one replica (e.g. the snapshot period): a
request that spans windows contributes a (window, request) node to each.
"""

from __future__ import annotations

from collections.abc import Iterator

from numpy.typing import ArrayLike

from uncertainty.summary import Summary

LEVELS: tuple[str, ...] = ("cluster", "pool", "replica", "batch", "request", "token")


class _Node:
    __slots__ = ("cache", "children", "own")

    def __init__(self, alpha: float) -> None:
        self.own = Summary(alpha)  # samples observed here + closed children
        self.children: dict[str, _Node] = {}
        self.cache: Summary | None = None


class Hierarchy:
    """Tree of mergeable summaries; see the module docstring.

    ``levels`` names the depth of each path element (root first); a path may be at
    most ``len(levels) - 2`` keys long (the last level, tokens, are the samples).
    Errors: a path that is too long or has empty keys raises ``ValueError``; bad
    samples raise ``ValueError`` and change nothing.
    """

    def __init__(self, levels: tuple[str, ...] = LEVELS, alpha: float = 0.01) -> None:
        if len(levels) < 2:
            raise ValueError("a hierarchy needs at least a root level and a sample level")
        self.levels = levels
        self.alpha = alpha
        self._root = _Node(alpha)

    # ---- writes ----------------------------------------------------------------
    def observe(self, path: tuple[str, ...], values: ArrayLike) -> None:
        """Add samples (e.g. one request's inter-token latencies) at ``path``."""
        self._check(path)
        node = self._walk(path, create=True)
        assert node is not None
        node.own.update(values, what=f"samples at {self._where(path)}")
        self._invalidate(path)

    def put(self, path: tuple[str, ...], summary: Summary, *, copy: bool = True) -> None:
        """Replace the subtree at ``path`` by ``summary`` (e.g. the latest summary a
        replica sent in its snapshot). The summary is copied unless ``copy=False``:
        the caller then promises never to mutate it (snapshots are immutable)."""
        self._check(path)
        if not path:
            raise ValueError("put: cannot replace the root; put its children")
        parent = self._walk(path[:-1], create=True)
        assert parent is not None
        node = _Node(self.alpha)
        node.own = summary.copy() if copy else summary
        parent.children[path[-1]] = node
        self._invalidate(path)

    def close(self, path: tuple[str, ...]) -> None:
        """Fold the node at ``path`` (and its subtree) into its parent and drop it.
        Totals above are unchanged; the node can no longer be asked for."""
        self._check(path)
        if not path:
            raise ValueError("close: cannot close the root")
        parent = self._walk(path[:-1], create=False)
        if parent is None or path[-1] not in parent.children:
            raise KeyError(f"close: no node at {self._where(path)}")
        node = parent.children.pop(path[-1])
        parent.own.merge(self._merged(node))
        self._invalidate(path[:-1])

    def remove(self, path: tuple[str, ...]) -> None:
        """Drop a subtree without folding it in (e.g. a replica that left)."""
        self._check(path)
        parent = self._walk(path[:-1], create=False)
        if parent is not None and path and parent.children.pop(path[-1], None) is not None:
            self._invalidate(path[:-1])

    # ---- reads -----------------------------------------------------------------
    def summary(self, path: tuple[str, ...] = ()) -> Summary:
        """Merged summary of everything under ``path`` (do not mutate it)."""
        node = self._walk(path, create=False)
        if node is None:
            raise KeyError(f"no node at {self._where(path)}")
        return self._merged(node)

    def children(self, path: tuple[str, ...] = ()) -> list[str]:
        node = self._walk(path, create=False)
        return [] if node is None else list(node.children)

    def walk(self, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Summary]]:
        """Yield (path, merged summary) for ``path`` and every node below it."""
        node = self._walk(path, create=False)
        if node is None:
            return
        stack = [(path, node)]
        while stack:
            p, n = stack.pop()
            yield p, self._merged(n)
            stack.extend(((*p, k), c) for k, c in n.children.items())

    def level_of(self, path: tuple[str, ...]) -> str:
        return self.levels[len(path)]

    def __len__(self) -> int:
        return sum(1 for _ in self.walk())

    # ---- internals -------------------------------------------------------------
    def _merged(self, node: _Node) -> Summary:
        if node.cache is None:
            if not node.children:
                node.cache = node.own
            else:
                acc = node.own.copy()
                for child in node.children.values():
                    acc.merge(self._merged(child))
                node.cache = acc
        return node.cache

    def _walk(self, path: tuple[str, ...], *, create: bool) -> _Node | None:
        node = self._root
        for key in path:
            nxt = node.children.get(key)
            if nxt is None:
                if not create:
                    return None
                nxt = node.children[key] = _Node(self.alpha)
            node = nxt
        return node

    def _invalidate(self, path: tuple[str, ...]) -> None:
        node: _Node | None = self._root
        node_list = [self._root]
        for key in path:
            assert node is not None
            node = node.children.get(key)
            if node is None:
                break
            node_list.append(node)
        for n in node_list:
            n.cache = None

    def _check(self, path: tuple[str, ...]) -> None:
        if len(path) > len(self.levels) - 2:
            raise ValueError(f"path {path!r} is deeper than the levels {self.levels[:-1]!r} allow")
        if any(not isinstance(k, str) or not k for k in path):
            raise ValueError(f"path {path!r}: keys must be non-empty strings")

    def _where(self, path: tuple[str, ...]) -> str:
        named = ", ".join(f"{self.levels[i + 1]}={k}" for i, k in enumerate(path))
        return f"{self.levels[0]}[{named}]" if named else self.levels[0]
