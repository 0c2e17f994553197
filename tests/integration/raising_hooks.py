"""Faults for tests/integration/test_raising_callbacks.py: policy callbacks that raise.

The deployed app builds its policies from the config registry inside Ray's
workers, so a raising one cannot come from the test process: ``install`` runs in
every worker (``runtime_env={"worker_process_setup_hook": install}``, pickled by
value: ``tests`` is not importable in Ray's workers) and makes the
``expected_slo`` admission raise on every decision. ``raising_plan_policy``
replaces ``orchestrator.autoscale._plan_policy`` in the test process before
``serve.run``; Serve pickles the autoscaling module by value, so the Serve
controller runs the replacement (this module registered by value first).
"""

from __future__ import annotations

from typing import Any

ADMISSION_MESSAGE = "injected: admission policy failure"
AUTOSCALE_MESSAGE = "injected: autoscaling policy failure"


def install() -> None:
    """Worker setup hook: ``ExpectedSloAdmission.decide`` raises from now on."""
    from policies.admission_outcome import ExpectedSloAdmission

    def decide(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(ADMISSION_MESSAGE)

    ExpectedSloAdmission.decide = decide  # type: ignore[method-assign]


def raising_plan_policy(ctx: Any, cache: Any) -> Any:
    """Stands in for ``orchestrator.autoscale._plan_policy``: always raises."""
    raise RuntimeError(AUTOSCALE_MESSAGE)
