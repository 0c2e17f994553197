"""The allocator does not flap: confidence band, cooldowns, hard budgets."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from optim import AllocationProblem, Allocator, HysteresisConfig, ProblemInputs, SolveStatus
from optim.allocation import Evaluation, SearchResult
from optim.synthetic import feasible_classes, synthetic_inputs, synthetic_specs
from tests.unit.optim import instances


@pytest.fixture(scope="module")
def setup() -> tuple[AllocationProblem, ProblemInputs]:
    rng = np.random.default_rng(1)
    pools, classes = synthetic_specs(2, 4, rng)
    inputs = synthetic_inputs(pools, classes, rng, load=0.6, replicas=2)
    classes = feasible_classes(classes, inputs, headroom=4.0)
    return AllocationProblem(pools, classes, cost_weight=0.01), inputs


def test_moves_then_waits_out_the_cooldown(setup: tuple[AllocationProblem, ProblemInputs]) -> None:
    problem, inputs = setup
    allocator = Allocator(problem, HysteresisConfig(up_cooldown_s=30.0, down_cooldown_s=120.0))
    first = allocator.decide(inputs, now=0.0)
    assert first.status is SolveStatus.OPTIMAL
    np.testing.assert_array_equal(first.replicas, first.proposed)  # nothing to wait for
    assert not np.array_equal(first.replicas, inputs.replicas)
    busier = inputs.replace(
        replicas=first.replicas, arrival_rate_per_s=inputs.arrival_rate_per_s * 1.6
    )
    early = allocator.decide(busier, now=10.0)
    grows = early.proposed > first.replicas
    assert grows.any()
    np.testing.assert_array_equal(early.replicas, first.replicas)
    assert all(early.held[p] == "cooldown" for p in np.flatnonzero(grows))
    later = allocator.decide(busier, now=45.0)
    np.testing.assert_array_equal(later.replicas, later.proposed)


def test_holds_for_a_change_inside_the_confidence_interval(
    setup: tuple[AllocationProblem, ProblemInputs],
) -> None:
    problem, inputs = setup
    settled = problem.search(inputs).best
    assert settled is not None
    now = inputs.replace(
        replicas=np.array(settled.replicas, dtype=np.float64),
        arrival_rate_per_s=inputs.arrival_rate_per_s * 1.25,
    )
    sure = Allocator(problem).decide(now, now=0.0)
    moved = sure.replicas != now.replicas
    assert moved.any()  # a 25 % rise known exactly is worth a move ...
    unsure = Allocator(problem).decide(
        now.replace(arrival_rate_ci_per_s=now.arrival_rate_per_s * 0.3), now=0.0
    )
    np.testing.assert_array_equal(unsure.replicas, now.replicas)  # ... not one within ±30 %
    assert all(unsure.held[p] == "confidence_interval" for p in np.flatnonzero(moved))


class _Scripted(AllocationProblem):
    """An allocation problem whose search answers are scripted (guard logic only)."""

    def __init__(self, answers: list[tuple[int, ...] | None], **kwargs: object) -> None:
        super().__init__(instances.pools(2), instances.classes(1), **kwargs)  # type: ignore[arg-type]
        self.answers = answers

    def search(self, inputs: ProblemInputs) -> SearchResult:
        n = self.answers.pop(0)
        if n is None:
            return SearchResult(SolveStatus.INFEASIBLE, None, float("nan"), None, {}, "overload")
        ev = Evaluation(n, 1.0, self.routing.solve(inputs, replicas=np.array(n, dtype=float)))
        return SearchResult(SolveStatus.OPTIMAL, ev, 0.9, None, {n: ev})


def test_budget_beats_a_half_applied_move() -> None:
    # H100 budget 6: (4, 2) -> proposal (2, 4). Pool 0's decrease is in cooldown,
    # so applying only pool 1's increase would need 8 GPUs: it is held too.
    problem = _Scripted([(4, 2), (2, 4)], gpu_limits={"H100": 6})
    allocator = Allocator(problem, HysteresisConfig(up_cooldown_s=0.0, down_cooldown_s=100.0))
    start = instances.inputs(replicas=np.array([2.0, 2.0]))
    first = allocator.decide(start, now=0.0)
    np.testing.assert_array_equal(first.replicas, [4, 2])
    second = allocator.decide(start.replace(replicas=first.replicas), now=10.0)
    np.testing.assert_array_equal(second.replicas, [4, 2])
    assert second.held == ("cooldown", "budget")


def test_infeasible_search_scales_to_the_budget_not_beyond() -> None:
    problem = _Scripted([None], gpu_limits={"H100": 7})
    result = Allocator(problem).decide(instances.inputs(replicas=np.array([1.0, 1.0])), now=0.0)
    assert result.status is SolveStatus.INFEASIBLE
    assert result.replicas.sum() == 7  # max_replicas 4 + 4 trimmed to the 7 GPUs
    assert problem.within_budget(result.replicas)


def test_bounds_are_hard_even_in_cooldown(setup: tuple[AllocationProblem, ProblemInputs]) -> None:
    problem, inputs = setup
    outside = inputs.replace(replicas=np.array([20.0, 0.0]))  # beyond max, below min
    result = Allocator(problem).decide(outside, now=0.0)
    assert problem.within_budget(result.replicas)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="up_cooldown_s must be finite and >= 0"):
        HysteresisConfig(up_cooldown_s=-1.0)
    assert replace(HysteresisConfig(), confidence_band=False).confidence_band is False


def test_a_held_pool_keeps_its_target_in_force_not_its_live_count() -> None:
    """``current`` is the targets in force. Pool 0 was sent from 2 to 3 replicas
    and its node then took one (live 2); the same proposal, within the up
    cooldown, keeps the target at 3, so the lost replica is asked for again.
    Measured against the live count instead (the default, ``current=None``), the
    cooldown holds pool 0 at 2: the target is written down to what survived."""
    problem = _Scripted([(3, 2), (3, 2), (3, 2)])
    allocator = Allocator(problem, HysteresisConfig(up_cooldown_s=60.0, down_cooldown_s=120.0))
    live = instances.inputs(replicas=np.array([2.0, 2.0]))
    first = allocator.decide(live, now=0.0)
    np.testing.assert_array_equal(first.replicas, [3, 2])
    kept = allocator.decide(live, now=10.0, current=first.replicas)
    np.testing.assert_array_equal(kept.replicas, [3, 2])
    assert kept.held == ("", "")
    written_down = allocator.decide(live, now=10.0)
    np.testing.assert_array_equal(written_down.replicas, [2, 2])
    assert written_down.held == ("cooldown", "")


def test_current_must_hold_one_finite_count_per_pool() -> None:
    allocator = Allocator(_Scripted([(1, 1), (1, 1)]))
    live = instances.inputs(replicas=np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"one finite count per pool \(2\), got \[1\.0\]"):
        allocator.decide(live, now=0.0, current=[1.0])
    with pytest.raises(ValueError, match="one finite count per pool"):
        allocator.decide(live, now=0.0, current=[1.0, float("nan")])
