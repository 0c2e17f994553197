"""The controller actor's process yields the CPU to the engines (``loops.controller_nice``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.config import parse_config

_BASE = {"name": "t", "model": {"name": "m"}, "pools": [{"name": "p", "accelerator": "H100"}]}


def _niceness_after(*calls: int) -> list[int]:
    # a child process: niceness can only go up, so the test must not touch pytest's own
    code = (
        "import os; from orchestrator.controller_actor import lower_priority; "
        f"print([lower_priority(n) for n in {list(calls)!r}], os.nice(0))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split("] ")
    values = [int(v) for v in out[0].strip("[").split(",")]
    return [*values, int(out[1])]


def test_priority_is_raised_to_the_setting_and_never_lowered() -> None:
    # 7, then 3 (kept at 7: a process cannot win back priority), then 12; relative
    # to the niceness this test runs at (a CI may run it niced already)
    base = os.nice(0)
    assert _niceness_after(7, 3, 12) == [max(base, 7), max(base, 7), max(base, 12), max(base, 12)]


def test_zero_leaves_the_process_alone() -> None:
    assert _niceness_after(0) == [os.nice(0), os.nice(0)]


def test_default_and_bounds() -> None:
    assert parse_config(_BASE, "t").loops.controller_nice == 10
    for bad in (-1, 20):
        with pytest.raises(ValueError, match="controller_nice"):
            parse_config({**_BASE, "loops": {"controller_nice": bad}}, "t")
