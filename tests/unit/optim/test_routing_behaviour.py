"""Monotonicity, infeasibility, fallbacks, DPP and the two solve paths."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from optim import ClassSpec, Fallback, RoutingProblem, SolverOptions, SolveStatus
from optim.compiled import FastSolver
from optim.fallback import proportional_to_capacity
from optim.synthetic import feasible_classes, perturb_rates, synthetic_inputs, synthetic_specs
from tests.unit.optim import instances


def test_raising_w_mem_moves_load_off_the_pool_nearest_its_kv_cliff() -> None:
    # Pool 0 has 1/3 of pool 1's KV blocks: at an equal split it is at 50 % KV
    # occupancy versus 17 %, while compute is symmetric.
    problem = RoutingProblem(instances.pools(2, kv_blocks=(1000, 3000)), instances.classes(1))
    shares = []
    for w_mem in (0.0, 0.1, 0.3, 1.0, 3.0, 10.0):
        result = problem.solve(instances.inputs(kv_block_s=np.full((1, 2), 100.0), w_mem=w_mem))
        assert result.status is SolveStatus.OPTIMAL
        shares.append(result.x[0, 0])
    assert shares[0] == pytest.approx(0.5, abs=1e-3)  # GPU term alone: symmetric
    assert all(b <= a + 1e-4 for a, b in itertools.pairwise(shares)), shares
    assert shares[-1] < shares[0] - 0.1, shares


def test_unreachable_slo_is_typed_infeasible_with_proportional_fallback() -> None:
    # Zero-load tail 0.5 + 3 x 0.05 = 0.65 s > SLO 0.6 s on every pool.
    problem = RoutingProblem(instances.pools(2), instances.classes(1, slo_s=0.6))
    result = problem.solve(instances.inputs(replicas=np.array([1.0, 3.0])))
    assert result.status is SolveStatus.INFEASIBLE
    assert result.fallback is Fallback.PROPORTIONAL
    assert "c0" in result.message
    np.testing.assert_allclose(result.x[0], [0.25, 0.75])  # proportional to capacity


def test_overload_falls_back_to_last_feasible_plan() -> None:
    problem = RoutingProblem(instances.pools(2), instances.classes(2))
    good = problem.solve(instances.inputs(2, arrival_rate_per_s=np.array([6.0, 4.0])))
    assert good.status is SolveStatus.OPTIMAL
    # 40 req/s x 0.05 replica-s = 2 replicas of work > rho_max x 2 replicas.
    bad = problem.solve(instances.inputs(2, arrival_rate_per_s=np.array([20.0, 20.0])))
    assert bad.status is SolveStatus.INFEASIBLE
    assert bad.fallback is Fallback.LAST_FEASIBLE
    np.testing.assert_array_equal(bad.x, good.x)
    assert not bad.prediction.feasible  # the fallback's consequences are reported, not hidden


def test_last_plan_is_not_reused_on_a_pool_that_lost_its_replicas() -> None:
    problem = RoutingProblem(instances.pools(2), instances.classes(1))
    problem.solve(instances.inputs())
    result = problem.solve(
        instances.inputs(replicas=np.array([0.0, 1.0]), arrival_rate_per_s=[40.0])
    )
    assert result.fallback is Fallback.PROPORTIONAL
    np.testing.assert_allclose(result.x[0], [0.0, 1.0])


def test_solver_exception_becomes_solver_error(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = RoutingProblem(instances.pools(2), instances.classes(1))
    assert problem.solve(instances.inputs()).status is SolveStatus.OPTIMAL

    def boom(self: FastSolver, values: object) -> None:
        raise RuntimeError("numerical trouble")

    monkeypatch.setattr(FastSolver, "solve", boom)
    result = problem.solve(instances.inputs())
    assert result.status is SolveStatus.SOLVER_ERROR
    assert result.fallback is Fallback.LAST_FEASIBLE
    assert "numerical trouble" in result.solver_status


def test_tight_class_does_not_block_the_pool_it_does_not_use() -> None:
    # Class 0 meets its 1.25 s SLO only below ~26 % utilization; class 1 is loose
    # and brings 0.8 replicas of work. The convex SLO rows hold for every usable
    # pair, used or not, so at first both pools are capped at 26 % (0.52 < 1.0
    # replicas of work: infeasible). Releasing class 0's row on the pool it gives
    # up makes room: class 0 on one lightly loaded pool, class 1 mostly on the other.
    pools = instances.pools(2)
    classes = (
        ClassSpec(name="tight", slo_s=1.25, tail_factor=3.0),
        ClassSpec(name="loose", slo_s=10.0, tail_factor=3.0),
    )
    inputs = instances.inputs(
        2,
        arrival_rate_per_s=np.array([4.0, 16.0]),
        service_time_s=np.array([[0.5, 0.5], [0.3, 0.3]]),
        queue_delay_s=np.array([0.5, 0.5]),
        preempt_delay_s=np.zeros(2),
    )
    one_round = RoutingProblem(pools, classes, SolverOptions(release_rounds=0)).solve(inputs)
    assert one_round.status is SolveStatus.INFEASIBLE
    result = RoutingProblem(pools, classes).solve(inputs)
    assert result.status.ok, result.message
    assert result.rounds >= 2
    assert result.prediction.feasible
    home = int(np.argmax(result.x[0]))
    assert result.x[0, home] == pytest.approx(1.0)
    assert result.prediction.utilization[home] < 0.27 < result.prediction.utilization[1 - home]


def test_problem_is_dpp_both_variants() -> None:
    problem = RoutingProblem(instances.pools(3), instances.classes(4))
    assert problem.is_dpp
    assert problem.formulation.problem.is_dcp(dpp=True)
    from optim.formulation import build

    assert build(problem.pools, problem.classes, free_replicas=True).problem.is_dcp(dpp=True)


def test_fast_path_matches_cvxpy_path() -> None:
    rng = np.random.default_rng(3)
    pools, classes = synthetic_specs(3, 5, rng)
    base = synthetic_inputs(pools, classes, rng)
    classes = feasible_classes(classes, base, headroom=4.0)
    fast = RoutingProblem(pools, classes, SolverOptions(fast_path=True))
    slow = RoutingProblem(pools, classes, SolverOptions(fast_path=False))
    for _ in range(3):
        inputs = perturb_rates(base, rng, 0.2)
        a, b = fast.solve(inputs), slow.solve(inputs)
        assert fast.fast_path_active and not slow.fast_path_active
        assert a.status is b.status is SolveStatus.OPTIMAL
        np.testing.assert_allclose(a.x, b.x, atol=1e-6)
        assert a.objective == pytest.approx(b.objective, rel=1e-6)


def test_last_plan_is_not_reused_on_a_pool_that_lost_some_of_its_replicas() -> None:
    """A node lost with 3 of a pool's 4 replicas: the last feasible plan's shares
    were sized for 4, so an infeasible re-solve falls back to capacity-proportional
    routing over what is left, not to the old shares (which would send the lost
    replicas' traffic to the one survivor)."""
    problem = RoutingProblem(instances.pools(2), instances.classes(1))
    good = problem.solve(instances.inputs(replicas=np.array([4.0, 1.0])))
    assert good.status is SolveStatus.OPTIMAL and good.x[0, 0] > 0.5
    lost = instances.inputs(replicas=np.array([1.0, 1.0]), arrival_rate_per_s=[200.0])
    result = problem.solve(lost)
    assert result.status is SolveStatus.INFEASIBLE
    assert result.fallback is Fallback.PROPORTIONAL
    np.testing.assert_allclose(result.x, proportional_to_capacity(lost))
    # more replicas than the plan was made for: still reusable
    grown = instances.inputs(replicas=np.array([5.0, 1.0]), arrival_rate_per_s=[200.0])
    assert problem.solve(grown).fallback is Fallback.LAST_FEASIBLE
