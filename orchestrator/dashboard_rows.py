"""The dashboard's control rows (backpressure, allocation and routing, controller
health), and ``rows``: every row of the dashboard, in order.
"""

from __future__ import annotations

from orchestrator.config import CascadeConfig
from orchestrator.dashboard_latency_rows import LATENCY_HIST, cascade_row, level_row, slos_row
from orchestrator.dashboard_panels import POOL, RATE, Panel, Query, hq, series


def rows(config: CascadeConfig | None) -> list[tuple[str, list[Panel]]]:
    """(title, panels) of every row; ``config`` sets the SLO lines (default class)."""
    if config is None:
        slos = slos_row()
    else:
        slo = config.slos.by_name(config.slos.default_class)
        slos = slos_row(slo.ttft_s, slo.e2e_s, slo.quantile)
    return [
        ("SLOs and tails", slos),
        ("Uncertainty by level (replica → pool → cluster)", level_row()),
        ("The cascade: prefill σ → decode σ", cascade_row()),
        ("Backpressure", backpressure_row()),
        ("Allocation and routing", allocation_row()),
        ("Controller health", health_row()),
    ]


def backpressure_row() -> list[Panel]:
    """Saturation, admission budget and decisions, queues and KV usage per pool."""
    kv = series("cascade_pool_kv_usage_ratio")
    replica_kv = series("cascade_replica_kv_usage_ratio")
    replica_running = series("cascade_replica_running_requests")
    replica_waiting = series("cascade_replica_waiting_requests")
    return [
        Panel(
            "Backpressure saturation by pool",
            "Saturation ≥ 1 means new prefills are held or shed.",
            (
                Query(
                    f"max by (pool) ({series('cascade_backpressure_saturation_ratio')}{{{POOL}}})",
                    "{{pool}}",
                ),
            ),
            unit="none",
            thresholds=((1.0, "red"),),
            min=0.0,
        ),
        Panel(
            "Admission budget by pool",
            "Prefill tokens per second admitted to new requests.",
            (
                Query(
                    f"max by (pool) "
                    f"({series('cascade_admission_budget_tokens_per_second')}{{{POOL}}})",
                    "{{pool}}",
                ),
            ),
            unit="none",
        ),
        Panel(
            "Admission decisions by class",
            "Requests per second admitted, rejected or deferred at the ingress.",
            (
                Query(
                    f"sum by (class, outcome) "
                    f"(rate({series('cascade_admission_decisions_total')}{RATE}))",
                    "{{class}} {{outcome}}",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "KV-cache usage by pool",
            "Mean fraction of KV blocks in use across a pool's replicas.",
            (
                Query(
                    f"max by (pool) ({kv}{{{POOL}}})",
                    "{{pool}}",
                ),
            ),
            unit="percentunit",
            width=12,
        ),
        Panel(
            "Running and waiting requests by pool",
            "Requests in the engines' batches and in their queues.",
            (
                Query(
                    f"max by (pool) ({series('cascade_pool_running_requests')}{{{POOL}}})",
                    "{{pool}} running",
                ),
                Query(
                    f"max by (pool) ({series('cascade_pool_waiting_requests')}{{{POOL}}})",
                    "{{pool}} waiting",
                ),
            ),
            unit="none",
            width=12,
        ),
        Panel(
            "KV-cache usage per replica",
            "Fraction of each replica's KV blocks in use (exported by the replica).",
            (
                Query(
                    f"max by (pool, replica) ({replica_kv}{{{POOL}}})",
                    "{{replica}}",
                ),
            ),
            unit="percentunit",
            width=12,
        ),
        Panel(
            "Running and waiting requests per replica",
            "Each replica's batch and queue (exported by the replica).",
            (
                Query(
                    f"max by (pool, replica) ({replica_running}{{{POOL}}})",
                    "{{replica}} running",
                ),
                Query(
                    f"max by (pool, replica) ({replica_waiting}{{{POOL}}})",
                    "{{replica}} waiting",
                ),
            ),
            unit="none",
            width=12,
        ),
    ]


def allocation_row() -> list[Panel]:
    """Routing weights, replica targets vs running, request rate per pool."""
    req_count = series(LATENCY_HIST, "count")
    return [
        Panel(
            "Routing weights (class → pool)",
            "Fraction of each class's requests the Plan sends to each pool.",
            (
                Query(
                    f"max by (class, pool) ({series('cascade_routing_weight_ratio')}{{{POOL}}})",
                    "{{class}} → {{pool}}",
                ),
            ),
            unit="percentunit",
            min=0.0,
        ),
        Panel(
            "Replicas: target vs running",
            "Replicas the Plan asks for and replicas reporting fresh snapshots.",
            (
                Query(
                    f"max by (pool) ({series('cascade_pool_target_replicas')}{{{POOL}}})",
                    "{{pool}} target",
                ),
                Query(
                    f"max by (pool) ({series('cascade_pool_running_replicas')}{{{POOL}}})",
                    "{{pool}} running",
                ),
            ),
            unit="none",
            min=0.0,
        ),
        Panel(
            "Router decision latency P50 / P99",
            "Time the request router takes to pick a replica.",
            (
                Query(
                    hq(0.99, "cascade_router_decision_seconds", "pool", POOL),
                    "{{pool}} P99",
                ),
                Query(
                    hq(0.5, "cascade_router_decision_seconds", "pool", POOL),
                    "{{pool}} P50",
                ),
            ),
        ),
        Panel(
            "Request rate by pool",
            "Finished requests per second, observed at the ingress.",
            (
                Query(
                    f'sum by (pool) (rate({req_count}{{metric="e2e", {POOL}}}{RATE}))',
                    "{{pool}}",
                ),
            ),
            unit="reqps",
            width=24,
        ),
    ]


def health_row() -> list[Panel]:
    """Optimizer solve times and statuses, controller steps, Plan version, staleness."""
    solve = "cascade_optimizer_solve_seconds"
    return [
        Panel(
            "Optimizer solve time P50 / P99",
            "Wall time of the routing optimizer's solves.",
            (
                Query(hq(0.99, solve, "status", ""), "{{status}} P99"),
                Query(hq(0.5, solve, "status", ""), "{{status}} P50"),
            ),
        ),
        Panel(
            "Solves by status",
            "Optimizer solves per second by status: optimal (or optimal_inaccurate), "
            "infeasible or solver_error (a safe fallback plan kept), static (no optimizer "
            "or not enough telemetry).",
            (Query(f"sum by (status) (rate({series(solve, 'count')}{RATE}))", "{{status}}"),),
            unit="ops",
        ),
        Panel(
            "Current plan status",
            "1 marks the status of the latest Plan.",
            (Query(f"max by (status) ({series('cascade_plan_status')})", "{{status}}"),),
            unit="none",
            kind="stat",
        ),
        Panel(
            "Controller steps per second",
            "Rate of controller steps (about 1 / snapshot period when healthy).",
            (Query(f"sum(rate({series('cascade_controller_steps_total')}{RATE}))", "steps/s"),),
            unit="ops",
        ),
        Panel(
            "Plan version",
            "Version of the latest Plan; a flat line means the controller stopped.",
            (Query(f"max({series('cascade_plan_version')})", "version"),),
            unit="none",
            kind="stat",
        ),
        Panel(
            "Refused controller calls",
            "Mutating controller calls (push, report_arrivals, pin) refused for a missing "
            "or wrong caller secret, per second by method. Anything above 0 is a caller "
            "that is not one of Cascade's own actors (docs/deploy.md, Security).",
            (
                Query(
                    f"sum by (method) "
                    f"(rate({series('cascade_controller_refused_calls_total')}{RATE}))",
                    "{{method}}",
                ),
            ),
            unit="ops",
            thresholds=((0.001, "red"),),
        ),
        Panel(
            "Stale replicas",
            "Replicas whose latest snapshot is older than loops.stale_after_s.",
            (Query(f"max({series('cascade_stale_replicas')})", "stale"),),
            unit="none",
            kind="stat",
            thresholds=((1.0, "orange"),),
        ),
    ]
