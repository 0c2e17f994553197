"""Disjoint CPU cores for the vLLM-CPU engines that share a host.

vLLM-CPU binds each engine's worker (its OpenMP threads *and* the worker
process's own thread, which runs the forward pass) to cores it picks from what
it can see (``VLLM_CPU_OMP_THREADS_BIND=auto``). Every replica of a deployment
sees the same cores and picks the same ones, so on a host with several
replicas all their forward passes take turns on one core (checked here with
``taskset -cp`` on the ``VLLM::Worker`` threads of two replicas: every thread of
both on core 0). The orchestration layer owns placement: like Ray hands each
GPU replica its own device, ``cpu_threads_bind: distinct`` hands each replica
on a host its own cores.

How: each replica, before its engine starts, takes an exclusive ``flock`` on
one lock file per core it claims (``<dir>/core-<id>.slot-<k>.lock``) and keeps
the file open for its life. The kernel drops the lock when the process exits,
however it exits, so a crashed replica's cores are free again without any
cleanup, and two replicas starting at once cannot take the same core
(``flock`` is atomic). Cores are taken in rounds (slot 0 of every core before
slot 1 of any), so more replicas than cores share them evenly instead of
failing. The claimed cores become the engine's ``VLLM_CPU_OMP_THREADS_BIND``
(set in the replica process's environment, which the engine's processes
inherit).

Not for GPU pools (the engine's threads only feed the device there) and not
across hosts (the lock directory is node-local, which is what is wanted:
cores are a node's).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["CoreClaim", "claim_cores", "default_lock_dir"]

MAX_SLOTS = 64  # replicas per core before claiming gives up (a misconfiguration)


def default_lock_dir() -> Path:
    """``$TMPDIR/cascade-core-claims``: node-local, shared by the node's replicas."""
    return Path(tempfile.gettempdir()) / "cascade-core-claims"


@dataclass(frozen=True)
class CoreClaim:
    """Cores held by this process while ``handles`` stay open.

    ``cores``: the claimed core ids, ascending. ``slot``: the sharing round
    they were taken in (0 = nobody else holds them). ``bind``: the value for
    ``VLLM_CPU_OMP_THREADS_BIND`` (``"0"``, ``"2,3"``).
    """

    cores: tuple[int, ...]
    slot: int
    handles: tuple[IO[bytes], ...] = field(repr=False, compare=False)

    @property
    def bind(self) -> str:
        return ",".join(str(c) for c in self.cores)

    def release(self) -> None:
        """Drop the locks now (exiting the process does the same)."""
        for h in self.handles:
            with contextlib.suppress(OSError):
                h.close()


def _try_lock(path: Path) -> IO[bytes] | None:
    handle = open(path, "ab")  # noqa: SIM115 - kept open for the claim's life
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def claim_cores(
    count: int,
    *,
    allowed: list[int] | None = None,
    lock_dir: Path | None = None,
) -> CoreClaim:
    """Claim ``count`` cores of ``allowed`` (default: this process's affinity
    mask) that the fewest other live claimants hold.

    Within a round (slot), cores are tried in ascending order, so the first
    replica on a 2-core host gets core 0 and the second core 1; a claim never
    mixes rounds (all its cores are equally shared). Raises ``ValueError`` when
    ``count`` < 1 or exceeds the allowed cores, and ``RuntimeError`` when every
    core is held ``MAX_SLOTS`` times over (a leak or a misconfiguration, named
    with the lock directory).
    """
    cores = sorted(os.sched_getaffinity(0) if allowed is None else set(allowed))
    if count < 1:
        raise ValueError(f"claim_cores: count must be >= 1, got {count}")
    if count > len(cores):
        raise ValueError(
            f"claim_cores: {count} cores asked, only {len(cores)} allowed ({cores})"
        )
    root = default_lock_dir() if lock_dir is None else lock_dir
    root.mkdir(parents=True, exist_ok=True)
    for slot in range(MAX_SLOTS):
        held: list[tuple[int, IO[bytes]]] = []
        for core in cores:
            handle = _try_lock(root / f"core-{core}.slot-{slot}.lock")
            if handle is not None:
                held.append((core, handle))
                if len(held) == count:
                    return CoreClaim(
                        cores=tuple(c for c, _ in held),
                        slot=slot,
                        handles=tuple(h for _, h in held),
                    )
        for _, handle in held:  # not enough free in this round: try the next
            handle.close()
    raise RuntimeError(
        f"claim_cores: every core of {cores} is claimed {MAX_SLOTS} times over "
        f"(lock files in {root})"
    )
