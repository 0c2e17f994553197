"""Known answers of the routing problem, checked against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq

from optim import RoutingProblem, SolverOptions, SolveStatus, predict
from tests.unit.optim import instances

# The solver stops at an objective gap of 1e-7; near a smooth minimum that fixes
# the routing only to about sqrt(gap / curvature) ~ 5e-4, hence 1e-3 on fractions.
TOL = 1e-3


def test_symmetric_pools_split_equally() -> None:
    problem = RoutingProblem(instances.pools(2), instances.classes(3))
    result = problem.solve(instances.inputs(3))
    assert result.status is SolveStatus.OPTIMAL
    assert not result.fallback_used
    np.testing.assert_allclose(result.x.sum(axis=0), [1.5, 1.5], atol=3 * TOL)
    np.testing.assert_allclose(result.prediction.utilization, [0.25, 0.25], atol=TOL)


def test_four_symmetric_pools_split_equally() -> None:
    problem = RoutingProblem(instances.pools(4), instances.classes(1))
    result = problem.solve(instances.inputs(1, 4, replicas=np.full(4, 1.0)))
    np.testing.assert_allclose(result.x[0], [0.25] * 4, atol=TOL)


def _twice_as_fast(**weights: float):  # type: ignore[no-untyped-def]
    """Pool 1 serves a request in half the replica-seconds (and half the time)."""
    return instances.inputs(
        demand_s=np.array([[0.05, 0.025]]),
        service_time_s=np.array([[0.5, 0.25]]),
        gpu_var_s2=np.full(2, 1e-3),
        kv_var_s2=np.full(2, 1e-3),
        net_var_s2=np.full(2, 1e-3),
        **weights,
    )


def test_twice_as_fast_quadratic_term_gives_one_to_four() -> None:
    # Interconnect term only: min eta (L0^2 + L1^2), L0 = lam d x, L1 = lam d/2 (1-x)
    # => x = (1-x)/4 => x = 1/5: the fast pool takes 80 %, not the 2/3 of capacity.
    problem = RoutingProblem(instances.pools(2), instances.classes(1))
    result = problem.solve(_twice_as_fast(w_gpu=0.0, w_mem=0.0, w_net=1.0))
    assert result.status is SolveStatus.OPTIMAL
    np.testing.assert_allclose(result.x[0], [0.2, 0.8], atol=TOL)


def test_twice_as_fast_gpu_term_matches_kkt() -> None:
    # GPU term only: min g [f(rho0) + f(rho1)], f(r) = r^2/(1-r), n = 1.
    # Stationarity: d0 f'(rho0) = d1 f'(rho1) with f'(r) = 1/(1-r)^2 - 1.
    lam, d0, d1 = 10.0, 0.05, 0.025

    def grad(x: float) -> float:
        r0, r1 = lam * d0 * x, lam * d1 * (1 - x)
        return d0 * (1 / (1 - r0) ** 2 - 1) - d1 * (1 / (1 - r1) ** 2 - 1)

    x_star = brentq(grad, 1e-9, 1 - 1e-9)
    problem = RoutingProblem(instances.pools(2), instances.classes(1))
    result = problem.solve(_twice_as_fast(w_gpu=1.0, w_mem=0.0, w_net=0.0))
    assert result.x[0, 0] == pytest.approx(x_star, abs=TOL)
    assert 0.15 < x_star < 0.3  # sanity: the fast pool takes most of the load


def test_plan_is_a_minimum_of_the_numpy_model() -> None:
    # The cvxpy model (perspective cones) and optim.predict (plain formulas) are
    # written separately: no feasible perturbation of the solver's plan may score
    # better under the numpy model.
    problem = RoutingProblem(instances.pools(2), instances.classes(2))
    inputs = _twice_as_fast_two_classes()
    result = problem.solve(inputs)
    assert result.status is SolveStatus.OPTIMAL
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(40):
        shift = rng.uniform(-0.05, 0.05, size=2)
        x = np.clip(result.x + np.column_stack([shift, -shift]), 0, 1)
        other = predict(problem.pools, problem.classes, inputs, x)
        if other.feasible:
            checked += 1
            assert other.objective >= result.objective - 1e-9
    assert checked >= 10


def test_cvxpy_objective_equals_the_numpy_model() -> None:
    from optim.formulation import parameter_values
    from optim.model import eligible_pairs

    problem = RoutingProblem(
        instances.pools(2), instances.classes(2), SolverOptions(fast_path=False)
    )
    inputs = _twice_as_fast_two_classes()
    result = problem.solve(inputs)
    mask = eligible_pairs(problem.classes, inputs, inputs.replicas > 0)
    scale = float(parameter_values(problem.pools, problem.classes, inputs, mask)["objective_scale"])
    solver_objective = problem.formulation.problem.value * scale
    assert solver_objective == pytest.approx(result.objective, rel=1e-4)
    assert result.objective > 0


def _twice_as_fast_two_classes():  # type: ignore[no-untyped-def]
    return instances.inputs(
        2,
        demand_s=np.array([[0.05, 0.025], [0.1, 0.05]]),
        service_time_s=np.array([[0.5, 0.25], [1.0, 0.5]]),
        hetero_var_s2=np.array([[1e-3, 2e-3], [4e-3, 1e-3]]),
        net_var_s2=np.full(2, 1e-3),
    )
