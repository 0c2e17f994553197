"""Integer allocation: gap to brute force, budgets, infeasibility."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from optim import AllocationProblem, SolveStatus
from optim.synthetic import feasible_classes, synthetic_inputs, synthetic_specs
from tests.unit.optim import instances


def _instance(num_pools: int, num_classes: int, seed: int, load: float, max_replicas: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    pools, classes = synthetic_specs(num_pools, num_classes, rng)
    pools = tuple(replace(p, max_replicas=max_replicas) for p in pools)
    inputs = synthetic_inputs(pools, classes, rng, load=load, replicas=2)
    return pools, feasible_classes(classes, inputs, headroom=4.0), inputs


@pytest.mark.parametrize(
    ("num_pools", "seed", "load", "cost_weight", "max_replicas"),
    [
        (2, 0, 0.6, 0.001, 8),  # cheap GPUs: variance wins, pools grow
        (2, 1, 0.6, 0.01, 8),  # interior optimum
        (2, 2, 0.8, 0.03, 8),  # expensive GPUs, heavier load
        (3, 3, 0.7, 0.01, 4),
    ],
)
def test_gap_to_brute_force_within_one_percent(
    num_pools: int, seed: int, load: float, cost_weight: float, max_replicas: int
) -> None:
    pools, classes, inputs = _instance(num_pools, 4, seed, load, max_replicas)
    problem = AllocationProblem(pools, classes, cost_weight=cost_weight)
    found = problem.search(inputs)
    exact = problem.brute_force(inputs)
    assert found.status.ok and found.best is not None and exact is not None
    gap = (found.best.total - exact.total) / exact.total
    assert -1e-9 <= gap <= 0.01, (found.best.replicas, exact.replicas, gap)
    # The relaxation is a lower bound on the integer optimum (solver tolerance aside).
    assert found.lower_bound <= exact.total * (1 + 1e-6)
    assert len(found.evaluated) < 0.5 * np.prod([p.max_replicas for p in pools])


def test_gpu_budget_is_respected_and_binds() -> None:
    pools, classes, inputs = _instance(2, 4, 0, 0.5, 8)
    free = AllocationProblem(pools, classes, cost_weight=0.0).search(inputs)
    assert free.best is not None and sum(free.best.replicas) > 6  # without a budget it grows
    types = {p.gpu_type for p in pools}
    limits = {t: 6 for t in types}
    capped = AllocationProblem(pools, classes, gpu_limits=limits, cost_weight=0.0)
    result = capped.search(inputs)
    assert result.best is not None
    n = np.array(result.best.replicas, dtype=np.float64)
    assert capped.within_budget(n)
    exact = capped.brute_force(inputs)
    assert exact is not None and result.best.total <= exact.total * 1.01


def test_infeasible_load_is_typed_and_never_raises() -> None:
    problem = AllocationProblem(instances.pools(2), instances.classes(1))
    # 200 req/s x 0.05 replica-s = 10 replicas of work > 0.9 x 8 replicas.
    result = problem.search(instances.inputs(arrival_rate_per_s=np.array([200.0])))
    assert result.status is SolveStatus.INFEASIBLE
    assert result.best is None
    np.testing.assert_array_equal(problem.max_capacity(), [4.0, 4.0])


def test_bad_allocation_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="cost_weight must be finite and >= 0"):
        AllocationProblem(instances.pools(2), instances.classes(1), cost_weight=-1.0)
    with pytest.raises(ValueError, match=r"gpu_limits\['H100'\] is below"):
        AllocationProblem(instances.pools(2), instances.classes(1), gpu_limits={"H100": 1})
