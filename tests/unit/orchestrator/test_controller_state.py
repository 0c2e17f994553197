"""The controller's config identity and restartable state (pure parts)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest

from orchestrator.config import CascadeConfig, parse_config
from orchestrator.contracts import RouterReport
from orchestrator.controller import Controller
from orchestrator.controller_state import (
    ControllerCheckpoint,
    config_change_message,
    config_fingerprint,
)
from orchestrator.serve_cli import restart_text, status_warnings
from uncertainty import DecayedWelford

POOLS = [
    {"name": "llm-h100", "accelerator": "H100", "min_replicas": 1, "max_replicas": 4},
    {"name": "llm-a100", "accelerator": "A100", "min_replicas": 1, "max_replicas": 4},
]


def _config(**over: object) -> CascadeConfig:
    return parse_config({"name": "cfg-a", "pools": POOLS, **over})


def _fitted(core: Controller) -> Controller:
    rng = np.random.default_rng(0)
    sp = rng.uniform(0.01, 0.05, 64)
    kv = rng.uniform(0, 1, 64)
    het = rng.uniform(1, 3, 64)
    core.cascade.update(sp, kv, het, 0.3 * sp**0.8 * (1 + kv) ** 1.5 * het**0.5)
    return core


def test_fingerprint_is_stable_and_sees_every_field() -> None:
    a = _config()
    # the same config written differently (defaults spelled out, keys reordered)
    same = parse_config({"pools": POOLS, "name": "cfg-a",
                         "loops": {"snapshot_period_s": 0.25}})  # fmt: skip
    assert config_fingerprint(a) == config_fingerprint(same)
    assert len(config_fingerprint(a)) == 64
    assert config_fingerprint(a) != config_fingerprint(_config(name="cfg-b"))
    assert config_fingerprint(a) != config_fingerprint(_config(loops={"routing_period_s": 1.0}))
    moved = [dict(POOLS[0], max_replicas=5), POOLS[1]]
    assert config_fingerprint(a) != config_fingerprint(_config(pools=moved))


def test_change_message_names_both_configs() -> None:
    old = {"name": "cfg-a", "fingerprint": "a" * 64, "pools": ["llm-h100", "llm-a100"]}
    new = {"name": "cfg-b", "fingerprint": "b" * 64, "pools": ["llm-l4"]}
    msg = config_change_message(old, new)
    assert "'cfg-a'" in msg and "a" * 12 in msg and "llm-h100, llm-a100" in msg
    assert "'cfg-b'" in msg and "b" * 12 in msg and "llm-l4" in msg
    assert msg.index("cfg-a") < msg.index("cfg-b")
    assert "did not report its config" in config_change_message(None, new)


def test_core_state_round_trips_and_the_version_never_goes_back() -> None:
    cfg = _config()
    core = _fitted(Controller(cfg))
    for t in range(7):
        core.step(float(t), [])
    core.pin("llm-a100", 3)
    state = json.loads(json.dumps(core.state_dict()))  # plain JSON, as checkpointed
    again = Controller(cfg)
    again.load_state(state)
    assert again.version == core.version == 7
    assert again.cascade.to_dict() == core.cascade.to_dict()
    assert again.cascade.coefficients == core.cascade.coefficients
    assert again.pinned == {"llm-a100": 3}
    assert again.step(8.0, []).version == 8
    assert again.plan is not None and again.plan.pools["llm-a100"].target_replicas == 3
    ahead = Controller(cfg)
    ahead.raise_version(20)
    ahead.load_state(state)  # an older state does not move the counter back
    assert ahead.version == 20


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda s: s.pop("version"),
        lambda s: s["cascade"].update(a=[[1.0]]),
        lambda s: s["pinned"].update({"llm-h100": 99}),  # above max_replicas
        lambda s: s["targets"].update({"no-such-pool": 1}),
    ],
)
def test_a_bad_state_is_refused_and_changes_nothing(
    corrupt: Callable[[dict[str, Any]], object],
) -> None:
    cfg = _config()
    state = _fitted(Controller(cfg)).state_dict()
    corrupt(state)
    core = Controller(cfg)
    before = core.state_dict()
    with pytest.raises(ValueError, match="controller state"):
        core.load_state(state)
    assert core.state_dict() == before


def test_checkpoint_round_trips_and_refuses_garbage() -> None:
    core = _fitted(Controller(_config()))
    core.step(1.0, [])
    est = DecayedWelford(halflife_s=30.0)
    est.update([2.0, 3.0], [1.0, 2.0])
    ckpt = ControllerCheckpoint(
        fingerprint="f" * 64, config_name="cfg-a", creation_id="c1", time_s=5.0, steps=9,
        restarts=1, core=core.state_dict(), arrivals={"default": est.to_dict()},
        shapes={"default": (512.0, 64.0)},
    )  # fmt: skip
    back = ControllerCheckpoint.decode(ckpt.encode())
    assert back == ckpt and back.plan_version == 1
    assert DecayedWelford.from_dict(dict(back.arrivals["default"])).mean == est.mean
    for bad in (b"", b"{}", b"[1]", b'{"fingerprint": 1}',
                ckpt.encode().replace(b'"version": 1', b'"version": -1')):  # fmt: skip
        with pytest.raises(ValueError, match="checkpoint"):
            ControllerCheckpoint.decode(bad)


def _status(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "config_name": "cfg-a",
        "config_fingerprint": "a" * 64,
        "pools": ["llm-h100", "llm-a100"],
        "replicas": ["r1", "r2"],
        "routers": {},
    }
    return {**base, **over}


def test_status_warns_when_the_controller_is_not_the_deployed_apps() -> None:
    assert status_warnings(_status(), ["llm-a100", "llm-h100"]) == []
    [pools] = status_warnings(_status(), ["llm-l4"])
    assert "llm-l4" in pools and "'cfg-a'" in pools and "a" * 12 in pools
    [none] = status_warnings(_status(), None)
    assert "no Serve app" in none and "'cfg-a'" in none
    other = RouterReport(3, (0.0,), 1, 0, {}, 0.1, config_fingerprint="b" * 64)
    same = RouterReport(3, (0.0,), 1, 0, {}, 0.1, config_fingerprint="a" * 64)
    routers = {"x": asdict(other), "y": asdict(same)}
    [fp] = status_warnings(_status(routers=routers), ["llm-a100", "llm-h100"])
    assert "b" * 12 in fp and "a" * 12 in fp
    [empty] = status_warnings(_status(replicas=[]), ["llm-a100", "llm-h100"])
    assert "0 live replicas" in empty
    [refused] = status_warnings(
        _status(refused_calls={"push": 3, "pin": 1}), ["llm-a100", "llm-h100"]
    )
    assert "refused 4 calls without its secret (pin 1, push 3)" in refused


def test_restart_text() -> None:
    assert restart_text(_status(restored=None)) == "started fresh"
    restored = {"state": "restored", "checkpoint_steps": 40, "checkpoint_age_s": 0.4}
    assert restart_text(_status(restored=restored, restarts=2)) == (
        "restarted 2x, state restored from step 40 (0.4 s old)"
    )
    after = {"state": "version only", "from_config": "cfg-b", "from_fingerprint": "b" * 64}
    assert "after a controller of config 'cfg-b'" in restart_text(_status(restored=after))
