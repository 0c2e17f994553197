"""Integration tests: local Ray + SimEngine replicas (no model).

Each module starts and stops its own Ray cluster. A Serve handle used by a test
in the driver keeps background threads that can reconnect Ray after the module
shut it down; the fixture below makes every module start from a clean state.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module", autouse=True)
def clean_ray() -> Iterator[None]:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()
