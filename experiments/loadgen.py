"""Moved to ``orchestrator.loadgen`` (``cascade load`` needs it, and production
packages never import ``experiments/``). Re-exported here for the demo and
benchmarks that still import it from this path."""

from orchestrator.loadgen import RequestRecord, prompt_text, replay, report

__all__ = ["RequestRecord", "prompt_text", "replay", "report"]
