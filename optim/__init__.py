"""Variance-minimizing routing and elastic GPU allocation (cvxpy, DPP).

Imports numpy, scipy and cvxpy only. The model is in docs/optimizer.md.

Public API::

    # what the config says (static)
    PoolSpec(name, gpu_type, tp_size, min_replicas, max_replicas,
             capacity_tokens_per_s, kv_blocks, interconnect="nvlink", gpu_cost_per_hour=0.0)
    ClassSpec(name, slo_s, quantile=0.99, tail_factor=None, prompt_tokens=1.0, output_tokens=1.0)

    # what telemetry says (per solve); arrays [class, pool], validated on construction
    ProblemInputs(arrival_rate_per_s, replicas, service_time_s, service_std_s, demand_s,
                  kv_block_s, gpu_var_s2, kv_var_s2, net_var_s2, queue_delay_s,
                  preempt_delay_s, hetero_var_s2=None, w_gpu=1.0, w_mem=1.0, w_net=1.0,
                  rho_max=0.9, kv_max=0.95, allowed=None, arrival_rate_ci_per_s=None)

    # fast decision (every few seconds; replicas fixed)
    problem = RoutingProblem(pools, classes, options=SolverOptions())
    result = problem.solve(inputs, replicas=None) -> RoutingResult
        # .status: SolveStatus, .x (C, P), .objective, .prediction, .solve_ms,
        # .fallback: Fallback, .fallback_used

    # slow decision (every ~30-60 s; integer replicas, hysteresis, cooldown)
    allocation = AllocationProblem(pools, classes, gpu_limits={"H100": 16}, cost_weight=0.0)
    allocator = Allocator(allocation, HysteresisConfig(up_cooldown_s=30, down_cooldown_s=120))
    decision = allocator.decide(inputs, now=clock()) -> AllocationResult
    allocation.search(inputs) -> SearchResult; allocation.brute_force(inputs) -> Evaluation | None

    # helpers
    predict(pools, classes, inputs, x, replicas=None) -> Prediction   # the model in numpy
    cantelli_kappa(q), gaussian_kappa(q)                               # tail factors κ
    fit_all_reduce(path, num_workers, devices_per_node=None) -> AllReduceFit
    layout_for(interconnect, tp_size) -> (num_workers, devices_per_node)
    net_variance_s2(fit, hidden_size=, num_layers=, tokens_per_step=) -> η, s²

Failure contract: malformed inputs raise ``ValueError`` naming the field and index
(at construction of the dataclasses); solver trouble never raises — it comes back
as a :class:`SolveStatus` with a fallback plan.
"""

from optim.allocation import AllocationProblem, Evaluation, SearchResult
from optim.hysteresis import Allocator, HysteresisConfig
from optim.inputs import ProblemInputs
from optim.interconnect import AllReduceFit, fit_all_reduce, layout_for, net_variance_s2
from optim.model import Prediction, predict
from optim.options import SolverOptions
from optim.results import AllocationResult, Fallback, RoutingResult, SolveStatus
from optim.routing import RoutingProblem
from optim.specs import ClassSpec, Interconnect, PoolSpec
from optim.tail import cantelli_kappa, gaussian_kappa

__all__ = [
    "AllReduceFit",
    "AllocationProblem",
    "AllocationResult",
    "Allocator",
    "ClassSpec",
    "Evaluation",
    "Fallback",
    "HysteresisConfig",
    "Interconnect",
    "PoolSpec",
    "Prediction",
    "ProblemInputs",
    "RoutingProblem",
    "RoutingResult",
    "SearchResult",
    "SolveStatus",
    "SolverOptions",
    "cantelli_kappa",
    "fit_all_reduce",
    "gaussian_kappa",
    "layout_for",
    "net_variance_s2",
    "predict",
]
