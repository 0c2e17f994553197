"""Hierarchy: exact merges at every level, bounded memory through close()."""

import numpy as np
import pytest

from uncertainty import Hierarchy, Summary


def _fill(h: Hierarchy, rng: np.random.Generator) -> dict[tuple[str, ...], np.ndarray]:
    data: dict[tuple[str, ...], np.ndarray] = {}
    for pool, scale in (("h100", 0.01), ("a100", 0.02)):
        for r in range(3):
            for b in range(2):
                for q in range(4):
                    path = (pool, f"r{r}", f"w{b}", f"req{q}")
                    x = rng.lognormal(np.log(scale), 0.3, size=rng.integers(5, 50))
                    h.observe(path, x)
                    data[path] = x
    return data


def _under(data: dict[tuple[str, ...], np.ndarray], prefix: tuple[str, ...]) -> np.ndarray:
    return np.concatenate([x for p, x in data.items() if p[: len(prefix)] == prefix])


def test_every_level_equals_the_exact_statistics_of_its_samples() -> None:
    h = Hierarchy()
    data = _fill(h, np.random.default_rng(0))
    for prefix in [
        (),
        ("h100",),
        ("a100", "r1"),
        ("h100", "r2", "w1"),
        ("a100", "r0", "w0", "req3"),
    ]:
        x = _under(data, prefix)
        s = h.summary(prefix)
        assert s.n == x.size
        assert abs(s.mean - x.mean()) / x.mean() < 1e-12
        assert abs(s.std - x.std(ddof=1)) / x.std(ddof=1) < 1e-9
        exact = np.quantile(x, 0.99, method="lower")
        assert abs(s.quantile(0.99) - exact) / exact <= 0.01 + 1e-12
    assert h.level_of(("h100", "r1")) == "replica"


def test_close_folds_into_parent_and_frees_the_node() -> None:
    h = Hierarchy()
    data = _fill(h, np.random.default_rng(1))
    total = h.summary().n
    nodes_before = len(h)
    for r in range(3):
        for b in range(2):
            h.close(("h100", f"r{r}", f"w{b}"))  # closes batches and their requests
    assert h.summary().n == total
    assert h.summary(("h100",)).n == _under(data, ("h100",)).size
    assert len(h) == nodes_before - 6 * (1 + 4)
    with pytest.raises(KeyError):
        h.summary(("h100", "r0", "w0"))
    with pytest.raises(KeyError):
        h.close(("h100", "r0", "w0"))


def test_put_replaces_a_replica_summary_and_invalidates_caches() -> None:
    h = Hierarchy()
    h.put(("h100", "r0"), Summary().update([1.0, 2.0]))
    h.put(("h100", "r1"), Summary().update([3.0]))
    assert h.summary().n == 3 and h.summary().mean == 2.0
    h.put(("h100", "r0"), Summary().update([5.0]))  # newer snapshot replaces, not adds
    assert h.summary().n == 2 and h.summary().mean == 4.0
    h.remove(("h100", "r1"))
    assert h.summary().n == 1
    assert sorted(h.children(("h100",))) == ["r0"]


def test_bad_paths_and_samples() -> None:
    h = Hierarchy()
    with pytest.raises(ValueError, match="deeper"):
        h.observe(("a", "b", "c", "d", "e"), [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        h.observe(("a", ""), [1.0])
    h.observe(("p", "r"), [1.0])
    with pytest.raises(ValueError, match=r"pool=p, replica=r.*finite"):
        h.observe(("p", "r"), [float("nan")])
    assert h.summary().n == 1
