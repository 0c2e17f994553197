"""One rule for replica targets: ``Controller.targets()``.

The Plan's ``target_replicas`` (``Controller.step``) and the actor's
``get_targets`` (``ControllerActor.get_targets`` returns ``core.targets()``, read
between steps) come from it: a pin overrides the allocator's target, clipped to
the pool's [min, max]; no pin: the allocator's last target (``initial_replicas``
before its first decision, or what a restored state holds).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator.config import CascadeConfig, parse_config
from orchestrator.controller import Controller
from orchestrator.estimates import ClassLoad
from replicas.telemetry import ReplicaSnapshot
from tests.builders import measured_snapshot

POOLS = [
    {"name": "fast", "accelerator": "H100", "min_replicas": 1, "max_replicas": 6,
     "initial_replicas": 3},
    {"name": "slow", "accelerator": "A100", "min_replicas": 2, "max_replicas": 6},
]  # fmt: skip
LOAD = {"default": ClassLoad(rate_per_s=2.0)}


def _config() -> CascadeConfig:
    return parse_config({"name": "targets", "pools": POOLS})


def _snaps(t: float) -> list[ReplicaSnapshot]:
    rng = np.random.default_rng(0)
    out = [measured_snapshot(f"f{i}", "fast", t, 0.010, rng, itl_samples=300) for i in range(2)]
    return out + [measured_snapshot(f"s{i}", "slow", t, 0.020, rng, itl_samples=300)
                  for i in range(2)]  # fmt: skip


def _plan_targets(ctl: Controller, t: float) -> dict[str, int]:
    plan = ctl.step(t, _snaps(t), LOAD)
    return {name: pp.target_replicas for name, pp in plan.pools.items()}


def test_before_any_decision_the_targets_are_the_initial_replicas_in_both_paths() -> None:
    ctl = Controller(_config())
    assert ctl.targets() == {"fast": 3, "slow": 2}  # initial_replicas; else min_replicas
    cfg = _config()
    off = cfg.model_copy(update={"optimizer": cfg.optimizer.model_copy(update={"enabled": False})})
    static = Controller(off)  # no allocator: the Plan carries the same initial targets
    assert _plan_targets(static, 1.0) == static.targets() == {"fast": 3, "slow": 2}


def test_a_pin_overrides_the_allocator_at_once_and_an_unpin_hands_it_back() -> None:
    ctl = Controller(_config())
    allocated = _plan_targets(ctl, 1.0)  # the first step runs the allocator
    assert ctl.allocation is not None
    want = dict(zip(("fast", "slow"), (int(n) for n in ctl.allocation.replicas), strict=True))
    assert allocated == ctl.targets() == want
    pin = 6 if want["slow"] != 6 else 5
    ctl.pin("slow", pin)
    # between steps (what get_targets reads): the pin already, the other pool untouched
    assert ctl.targets() == {"fast": want["fast"], "slow": pin}
    assert _plan_targets(ctl, 2.0) == {"fast": want["fast"], "slow": pin}
    ctl.pin("slow", None)
    # back to the allocator's own target at once, not the last Plan's pinned value
    assert ctl.targets() == want
    assert _plan_targets(ctl, 3.0) == want
    ctl.pin("slow", None)  # unpinning an unpinned pool changes nothing
    assert ctl.pinned == {} and ctl.targets() == want


def test_a_pin_of_an_unknown_pool_or_out_of_bounds_is_refused_naming_the_pool() -> None:
    ctl = Controller(_config())
    ctl.pin("fast", 4)
    with pytest.raises(ValueError, match=r"unknown pool 'gpu-x'; pools: \['fast', 'slow'\]"):
        ctl.pin("gpu-x", 2)
    with pytest.raises(ValueError, match=r"pool slow: replicas 1 outside \[2, 6\]"):
        ctl.pin("slow", 1)
    with pytest.raises(ValueError, match=r"unknown pool 'gpu-x'"):
        ctl.pin("gpu-x", None)  # unpinning a pool that does not exist is an error too
    assert ctl.pinned == {"fast": 4} and ctl.targets() == {"fast": 4, "slow": 2}


def test_a_restored_state_gives_the_same_targets_before_and_after_its_first_step() -> None:
    ctl = Controller(_config())
    _plan_targets(ctl, 1.0)
    ctl.pin("fast", 5)
    before = ctl.targets()
    state = json.loads(json.dumps(ctl.state_dict()))  # plain JSON, as checkpointed
    again = Controller(_config())
    again.load_state(state)
    # a restarted actor answers get_targets with these before its first step
    assert again.targets() == before
    assert again.pinned == {"fast": 5}
    off = _config()
    off = off.model_copy(update={"optimizer": off.optimizer.model_copy(update={"enabled": False})})
    frozen = Controller(off)  # no allocator: the Plan shows exactly the restored targets
    frozen.load_state(state)
    assert _plan_targets(frozen, 2.0) == before
    again.pin("fast", None)
    assert again.targets()["fast"] == state["targets"]["fast"]  # the allocator's, restored
