"""Named router profiles: one line of config each, usable wherever a router
section is expected (``router: pow2`` in YAML, ``build_router("pow2")`` in code,
``--policies pow2,cascade`` in the simulator).

The baselines reproduce the routers users compare against; ``cascade`` is
Cascade's default profile. ``examples/policies/<name>.yaml`` spell each out.
"""

from __future__ import annotations

from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    # Ray Serve / generic load balancers
    "round_robin": {"picker": "round_robin"},
    "random": {"picker": "random"},
    "pow2": {"scorers": [{"type": "least_outstanding"}], "picker": "pow2"},
    "least_outstanding": {"scorers": [{"type": "least_outstanding"}], "picker": "max_score"},
    # llm-d scorers, one at a time
    "kv_usage": {"scorers": [{"type": "kv_usage"}], "picker": "max_score"},
    "queue_depth": {"scorers": [{"type": "queue_depth"}], "picker": "max_score"},
    # prefix affinity (llm-d prefix scorer / Ray PrefixCacheAffinityRouter): the
    # overlap dominates; a small load term splits ties instead of piling every
    # cache-cold request onto one replica
    "prefix_cache": {
        "scorers": [
            {"type": "prefix_cache", "weight": 1.0},
            {"type": "least_outstanding", "weight": 0.1},
        ],
        "picker": "max_score",
    },
    # NVIDIA Dynamo KV router, temperature 0
    "dynamo_cost": {"scorers": [{"type": "dynamo_cost"}], "picker": "max_score"},
    # Cascade
    "uncertainty": {"scorers": [{"type": "uncertainty"}], "picker": "max_score"},
    # Cascade. The weights state an order of concerns, not a fit to a trace:
    # P(meet the SLO) first (its own ε tie-break cannot separate replicas that all
    # meet it comfortably), then load balance, then prefix affinity and KV headroom
    # as tie-breakers. least_outstanding is min-max normalised (1 for the least
    # loaded), so with weight 0.5 > 0.3 + 0.1 no affinity or KV term can send a
    # request to a replica with more ongoing work than another. Without it the
    # affinity term herded: every request of a shared prefix (a system prompt)
    # went to the replica that saw it first, doubling its batch while its twin
    # idled (measured on vLLM-CPU: TTFT P50 +45 ms and TPOT P50 +16 % over stock
    # Ray at 0.15 of capacity; docs/benchmarks.md, "Serving path"). Routers rank
    # replicas within one pool (one accelerator type), so balancing load among
    # them is the right second objective; pools are weighed by the Plan. The
    # load counted is the router's own in-flight requests: current and exact for
    # a pool's only router, where the snapshot's running + waiting is ~0.5 s stale
    # and counts requests that have finished (on vLLM-CPU at 0.55 of capacity it
    # tripled TTFT P99 vs routing on in-flight counts alone). No prefix_cache
    # term: with it (0.3) the affinity decided every in-flight count tie, always
    # for the replica holding the longest tracked match, so ties stopped
    # alternating and work piled up on one replica while counts stayed level
    # (vLLM-CPU at 0.8 of capacity, interleaved A/B of 320 requests: TPOT P50
    # 1.38x and TTFT P99 1.73x stock's; without it 0.92x and 1.08x). In the
    # simulator grid (4 traces x 3 loads x seeds 0, 1) removing it lost no cell
    # against the best baseline (docs/benchmarks.md, "Interleaved A/B"). Prefix
    # reuse stays available as its own profile and scorer.
    "cascade": {
        "filters": [{"type": "kv_headroom", "params": {"max_kv_usage": 0.97}}],
        "scorers": [
            {"type": "uncertainty", "weight": 1.0},
            {"type": "least_outstanding", "weight": 0.5, "params": {"count": "in_flight"}},
            {"type": "kv_usage", "weight": 0.1},
        ],
        "picker": "max_score",
    },
}

BASELINES: tuple[str, ...] = (
    "round_robin",
    "random",
    "pow2",
    "least_outstanding",
    "kv_usage",
    "queue_depth",
    "prefix_cache",
    "dynamo_cost",
)
