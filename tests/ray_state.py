"""Clean Ray state per test module, for the Ray tiers (imported by their conftests).

A Serve handle used in the driver keeps background threads that can reconnect
Ray after a module shut its cluster down; each module therefore starts by
shutting down whatever is connected, and ends the same way.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator


def free_port() -> int:
    """A TCP port free on loopback now (Serve's HTTP port in the Ray tiers: never
    8000, which other servers on this host use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_ray() -> Iterator[None]:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()
