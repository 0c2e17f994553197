"""Clean Ray state per test module, for the Ray tiers (imported by their conftests).

A Serve handle used in the driver keeps background threads that can reconnect
Ray after a module shut its cluster down; each module therefore starts by
shutting down whatever is connected, and ends the same way.
"""

from __future__ import annotations

from collections.abc import Iterator


def fresh_ray() -> Iterator[None]:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()
