"""Integration tests: local Ray + SimEngine replicas (no model)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ray_state import fresh_ray


@pytest.fixture(scope="module", autouse=True)
def clean_ray() -> Iterator[None]:
    yield from fresh_ray()
