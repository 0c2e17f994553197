"""Disjoint cores per replica (replicas.core_claim): flock claims, rounds, release."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from replicas.core_claim import MAX_SLOTS, claim_cores


def test_replicas_on_one_host_get_distinct_cores(tmp_path: Path) -> None:
    a = claim_cores(1, allowed=[0, 1], lock_dir=tmp_path)
    b = claim_cores(1, allowed=[0, 1], lock_dir=tmp_path)
    assert (a.cores, b.cores) == ((0,), (1,))
    assert (a.slot, b.slot) == (0, 0)
    assert (a.bind, b.bind) == ("0", "1")


def test_more_replicas_than_cores_share_evenly(tmp_path: Path) -> None:
    claims = [claim_cores(1, allowed=[0, 1], lock_dir=tmp_path) for _ in range(5)]
    assert [c.cores[0] for c in claims] == [0, 1, 0, 1, 0]
    assert [c.slot for c in claims] == [0, 0, 1, 1, 2]


def test_multi_core_claims_never_mix_rounds(tmp_path: Path) -> None:
    a = claim_cores(2, allowed=[0, 1, 2, 3], lock_dir=tmp_path)
    b = claim_cores(2, allowed=[0, 1, 2, 3], lock_dir=tmp_path)
    c = claim_cores(3, allowed=[0, 1, 2, 3], lock_dir=tmp_path)
    assert (a.bind, b.bind) == ("0,1", "2,3")
    assert c.slot == 1 and c.bind == "0,1,2"


def test_released_cores_are_claimed_again(tmp_path: Path) -> None:
    a = claim_cores(1, allowed=[0, 1], lock_dir=tmp_path)
    claim_cores(1, allowed=[0, 1], lock_dir=tmp_path)
    a.release()
    again = claim_cores(1, allowed=[0, 1], lock_dir=tmp_path)
    assert again.cores == (0,) and again.slot == 0


def test_a_dead_process_frees_its_cores(tmp_path: Path) -> None:
    # the kernel drops a flock with its process, however the process ends
    code = (
        "import os, sys; from pathlib import Path; from replicas.core_claim import claim_cores;"
        f"c = claim_cores(1, allowed=[0, 1], lock_dir=Path({str(tmp_path)!r}));"
        "print(c.bind, flush=True); os._exit(0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[3])  # fmt: skip
    assert out.stdout.strip() == "0"
    assert claim_cores(1, allowed=[0, 1], lock_dir=tmp_path).cores == (0,)


def test_default_cores_are_this_process_affinity(tmp_path: Path) -> None:
    import os

    claim = claim_cores(1, lock_dir=tmp_path)
    assert set(claim.cores) <= os.sched_getaffinity(0)


def test_bad_counts_are_refused_with_the_numbers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="count must be >= 1"):
        claim_cores(0, allowed=[0], lock_dir=tmp_path)
    with pytest.raises(ValueError, match=r"3 cores asked, only 2 allowed"):
        claim_cores(3, allowed=[0, 1], lock_dir=tmp_path)


def test_exhausted_cores_raise_naming_the_lock_dir(tmp_path: Path) -> None:
    held = [claim_cores(1, allowed=[7], lock_dir=tmp_path) for _ in range(MAX_SLOTS)]
    assert held[-1].slot == MAX_SLOTS - 1
    with pytest.raises(RuntimeError, match=str(tmp_path)):
        claim_cores(1, allowed=[7], lock_dir=tmp_path)
