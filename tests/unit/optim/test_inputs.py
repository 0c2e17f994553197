"""Bad inputs are refused with a message naming the field and the index."""

from __future__ import annotations

import numpy as np
import pytest

from optim import ClassSpec, PoolSpec, RoutingProblem, cantelli_kappa, gaussian_kappa
from tests.unit.optim import instances


def test_negative_rate_names_class_index() -> None:
    with pytest.raises(
        ValueError, match=r"arrival_rate_per_s\[c=2\] must be finite and >= 0, got -1"
    ):
        instances.inputs(3, arrival_rate_per_s=np.array([1.0, 2.0, -1.0]))


def test_nan_variance_names_pool_index() -> None:
    with pytest.raises(ValueError, match=r"gpu_var_s2\[p=1\] must be finite and >= 0, got nan"):
        instances.inputs(gpu_var_s2=np.array([1e-3, np.nan]))


def test_nan_in_pair_array_names_both_indices() -> None:
    std = np.full((2, 2), 0.05)
    std[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"service_std_s\[c=1, p=0\] must be finite"):
        instances.inputs(2, service_std_s=std)


def test_zero_demand_is_refused() -> None:
    with pytest.raises(ValueError, match=r"demand_s\[c=0, p=1\] must be finite and > 0, got 0"):
        instances.inputs(demand_s=np.array([[0.05, 0.0]]))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("capacity_tokens_per_s", 0.0, "capacity_tokens_per_s must be finite and > 0"),
        ("kv_blocks", 0, "kv_blocks must be > 0"),
        ("tp_size", 0, "tp_size must be >= 1"),
        ("max_replicas", 0, "need 0 <= min_replicas <= max_replicas"),
        ("interconnect", "infiniband", "interconnect must be one of"),
        ("gpu_cost_per_hour", float("nan"), "gpu_cost_per_hour must be finite"),
    ],
)
def test_bad_pool_spec_is_refused(field: str, value: object, message: str) -> None:
    spec = dict(
        name="p",
        gpu_type="H100",
        tp_size=1,
        min_replicas=1,
        max_replicas=2,
        capacity_tokens_per_s=100.0,
        kv_blocks=10,
    )
    spec[field] = value
    with pytest.raises(ValueError, match=f"pool 'p': {message}"):
        PoolSpec(**spec)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slo_s": 0.0}, "slo_s must be finite and > 0"),
        ({"slo_s": 1.0, "quantile": 1.0}, r"quantile must be in \(0, 1\)"),
        ({"slo_s": 1.0, "tail_factor": -1.0}, "tail_factor must be finite and >= 0"),
    ],
)
def test_bad_class_spec_is_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassSpec(name="c", **kwargs)


def test_shape_mismatch_and_caps() -> None:
    with pytest.raises(ValueError, match=r"service_time_s must have shape \(1, 2\), got \(2, 2\)"):
        instances.inputs(service_time_s=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"rho_max must be in \(0.0, 1.0\)"):
        instances.inputs(rho_max=1.0)
    with pytest.raises(ValueError, match=r"replicas\[p=0\] must be an integer"):
        instances.inputs(replicas=np.array([1.5, 1.0]))


def test_duplicate_names_and_mismatched_problem() -> None:
    pool = instances.pools(1)[0]
    with pytest.raises(ValueError, match="pool name 'p0' at index 1 is duplicated"):
        RoutingProblem((pool, pool), instances.classes(1))
    problem = RoutingProblem(instances.pools(3), instances.classes(1))
    with pytest.raises(ValueError, match="inputs are for 1 classes x 2 pools"):
        problem.solve(instances.inputs())


def test_inputs_are_read_only() -> None:
    inputs = instances.inputs()
    with pytest.raises(ValueError, match="read-only"):
        inputs.demand_s[0, 0] = 1.0


def test_tail_factors() -> None:
    # Cantelli: P(T >= mu + k sigma) <= 1/(1+k^2) = 1-q.
    assert cantelli_kappa(0.99) == pytest.approx(np.sqrt(99.0))
    assert gaussian_kappa(0.99) == pytest.approx(2.3263, abs=1e-4)
    assert ClassSpec(name="c", slo_s=1.0, quantile=0.9).kappa == pytest.approx(3.0)
    with pytest.raises(ValueError, match="quantile"):
        cantelli_kappa(1.0)
