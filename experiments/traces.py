"""Moved to ``orchestrator.traces`` (``cascade load`` needs it, and production
packages never import ``experiments/``). Re-exported here for the simulator and
benchmarks that still import it from this path."""

from orchestrator.traces import (
    MOONCAKE_BLOCK_TOKENS,
    SHORT_NAMES,
    Trace,
    TraceRequest,
    gamma_bursty,
    load_azure,
    load_mooncake,
    load_trace,
    mmpp,
    poisson,
)

__all__ = [
    "MOONCAKE_BLOCK_TOKENS",
    "SHORT_NAMES",
    "Trace",
    "TraceRequest",
    "gamma_bursty",
    "load_azure",
    "load_mooncake",
    "load_trace",
    "mmpp",
    "poisson",
]
