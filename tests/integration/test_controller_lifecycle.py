"""The detached controller across config changes and restarts, on local Ray.

The first two tests drive the controller actor alone with synthetic replica
snapshots; the last deploys the app (one simulated replica) and replaces its
controller under it. Each test starts from no controller and no checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
from ray.experimental import internal_kv  # noqa: E402

from orchestrator.config import CascadeConfig, parse_config  # noqa: E402
from orchestrator.controller_start import ensure_controller  # noqa: E402
from orchestrator.controller_state import (  # noqa: E402
    CHECKPOINT_EVERY_STEPS,
    CHECKPOINT_KEY,
    config_fingerprint,
)
from replicas.names import CONTROLLER_NAME, CONTROLLER_NAMESPACE  # noqa: E402
from replicas.telemetry import BatchComposition, DecayedStats, ReplicaSnapshot  # noqa: E402
from tests.ray_state import free_port  # noqa: E402

pytestmark = pytest.mark.ray


def _config(name: str, pools: list[str]) -> CascadeConfig:
    return parse_config(
        {
            "name": name,
            "model": {"name": "sim-llama", "engine": "sim"},
            "pools": [
                {"name": p, "accelerator": p[4:].upper(), "min_replicas": 1, "max_replicas": 3}
                for p in pools
            ],
            "loops": {"snapshot_period_s": 0.1},
        }
    )


CFG_A = _config("cfg-a", ["llm-h100", "llm-a100"])
CFG_B = _config("cfg-b", ["llm-l4"])
TEMP = Path(tempfile.mkdtemp(prefix="cl", dir="/tmp"))  # short: Ray's socket paths


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    # address="local": never attach to a cluster someone else started
    ray.init(address="local", num_cpus=2, resources={"accelerator_type:H100": 4},
             include_dashboard=False, namespace="cascade", _temp_dir=str(TEMP),
             logging_level=logging.ERROR)  # fmt: skip
    yield
    ray.shutdown()
    shutil.rmtree(TEMP, ignore_errors=True)


@pytest.fixture
def clean(cluster: None) -> Iterator[None]:
    """No controller and no checkpoint before and after each test."""

    def wipe() -> None:
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE))
        internal_kv._internal_kv_del(CHECKPOINT_KEY, namespace=CONTROLLER_NAMESPACE)
        _until(_no_controller, "the controller to go")

    wipe()
    yield
    wipe()


def _no_controller() -> bool:
    try:
        ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
    except ValueError:
        return True
    return False


def _until(cond: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _status(actor: Any) -> dict[str, Any]:
    return dict(ray.get(actor.status.remote(), timeout=30))


def _snapshot(rid: str, pool: str, i: int) -> ReplicaSnapshot:
    """A replica snapshot the cascade model fits on (σ_prefill, KV, h → σ_decode)."""
    sp = 0.01 + 0.004 * (i % 5)
    kv = 0.1 + 0.15 * (i % 6)
    return ReplicaSnapshot(
        replica_id=rid,
        pool=pool,
        time_s=time.time(),
        kv_blocks_used=int(kv * 1000),
        kv_blocks_total=1000,
        batch=BatchComposition(prefill_tokens=256, decode_seqs=8, heterogeneity=1.0 + i % 3),
        recent={
            "itl": DecayedStats(0.02, 0.3 * sp**0.8 * (1 + kv) ** 1.5, 50.0, 0.4),
            "prefill_step": DecayedStats(0.08, sp, 20.0, 0.4),
        },
    )


def test_a_new_config_replaces_the_controller_and_the_same_config_reuses_it(
    clean: None, caplog: pytest.LogCaptureFixture
) -> None:
    first = ensure_controller(CFG_A)
    assert first.action == "created" and first.message is None
    steps = _until(lambda: (s := _status(first.actor)["steps"]) >= 3 and s, "A's steps")

    again = ensure_controller(CFG_A)  # the same config: the same actor, still counting
    assert again.action == "reused" and again.message is None
    assert again.actor._actor_id == first.actor._actor_id
    st = _status(again.actor)
    assert st["steps"] >= steps and st["restarts"] == 0 and st["restored"] is None
    a_version = st["plan_version"]

    with caplog.at_level(logging.WARNING, logger="cascade.controller"):
        b = ensure_controller(CFG_B)
    assert b.action == "replaced" and b.message is not None
    fp_a, fp_b = config_fingerprint(CFG_A)[:12], config_fingerprint(CFG_B)[:12]
    for text in (b.message, caplog.text):
        assert "'cfg-a'" in text and fp_a in text and "llm-h100, llm-a100" in text
        assert "'cfg-b'" in text and fp_b in text and "llm-l4" in text
    info = ray.get(b.actor.config_info.remote())
    assert info == {"name": "cfg-b", "fingerprint": config_fingerprint(CFG_B), "pools": ["llm-l4"]}
    assert b.actor._actor_id != first.actor._actor_id
    named = ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
    assert ray.get(named.config_info.remote())["name"] == "cfg-b"
    with pytest.raises(ray.exceptions.RayActorError):  # A's actor is gone for good
        ray.get(first.actor.status.remote(), timeout=30)
    st_b = _until(lambda: (s := _status(b.actor))["plan_version"] and s, "B's first plan")
    assert st_b["pools"] == ["llm-l4"] and st_b["config_name"] == "cfg-b"
    assert st_b["restored"]["state"] == "version only"  # A's fit is not reused
    assert st_b["plan_version"] > a_version  # versions never go back across configs
    view = ray.get(b.actor.get_view.remote())
    assert list(view.pools) == ["llm-l4"]


def test_a_killed_controller_restarts_with_its_state(clean: None) -> None:
    started = ensure_controller(CFG_A)
    actor, secret = started.actor, started.secret
    for i in range(12):
        snaps = [_snapshot(f"h{i % 2}", "llm-h100", i), _snapshot(f"a{i % 2}", "llm-a100", i + 1)]
        ray.get(actor.push.remote(snaps, secret=secret))
        arrivals = {"default": (5 + i % 3, 400.0, 60.0)}
        ray.get(actor.report_arrivals.remote(arrivals, 1.0, secret=secret))
        time.sleep(0.05)
    assert ray.get(actor.pin.remote("llm-a100", 2, secret=secret)) == {"llm-a100": 2}
    # let the loop fold everything in, then write a checkpoint after that
    s0 = _status(actor)
    _until(lambda: _status(actor)["checkpoints"] >= s0["checkpoints"] + 2, "two checkpoints")
    before = _status(actor)
    fit = ray.get(actor.sync.remote({})).cascade
    assert fit is not None and fit["w"] > 0  # the model was fitted on the snapshots
    assert before["arrival_rates"]["default"] > 0

    ray.kill(actor, no_restart=False)  # a crash: Ray restarts the detached actor
    after = _until(lambda: (s := _status(actor))["restarts"] and s, "the restart", 30.0)
    assert after["restarts"] == 1 and after["restored"]["state"] == "restored"
    assert ray.get(actor.sync.remote({})).cascade == fit
    assert after["pinned"] == {"llm-a100": 2}
    assert after["arrival_rates"] == before["arrival_rates"]
    assert after["steps"] >= before["steps"] - CHECKPOINT_EVERY_STEPS
    assert ray.get(actor.config_info.remote())["name"] == "cfg-a"
    plan = _until(lambda: ray.get(actor.get_plan.remote()), "a plan after the restart")
    assert plan.version > before["plan_version"]  # never back: routers compare versions
    assert plan.pools["llm-a100"].target_replicas == 2  # the pin survived
    assert ensure_controller(CFG_A).action == "reused"  # the restarted one is reused


def test_replicas_of_a_running_app_follow_a_replaced_controller(
    clean: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A controller of another config replaces the app's (``cascade up`` does this
    before redeploying): the replicas notice their failed pushes, look the name up
    again and report to the new controller (a dead handle is not kept), and until
    the app is redeployed ``cascade status`` says that its routers run another config."""
    import argparse

    import requests
    from ray import serve

    from orchestrator.app import build_app
    from orchestrator.serve_cli import run_status

    app_a = _config("cfg-a", ["llm-h100"])
    app_b = _config("cfg-b", ["llm-h100"])  # same pool, another config
    port = free_port()  # not 8000: other servers share this host
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app({"config": app_a, "time_scale": 0.1}), name="cascade", route_prefix="/")
        old = ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
        _until(lambda: _status(old)["replicas"], "the replica's snapshots", 60.0)
        new = ensure_controller(app_b)
        assert new.action == "replaced" and "'cfg-a'" in (new.message or "")
        st = _until(lambda: (s := _status(new.actor))["replicas"] and s, "snapshots at B", 30.0)
        assert st["config_name"] == "cfg-b" and len(st["replicas"]) == 1
        # B hears from the replica only if it let go of A's dead handle
        received = st["snapshots_received"]
        _until(lambda: _status(new.actor)["snapshots_received"] > received + 4, "more pushes")

        body: dict[str, Any] = {"model": "sim-llama", "prompt": "hello", "max_tokens": 4}
        r = requests.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        _until(lambda: _status(new.actor)["routers"], "the app's router to sync with B")
        monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside the asserted phrases
        assert run_status(argparse.Namespace()) == 0
        out = capsys.readouterr().out
        assert f"config 'cfg-b' (fp {config_fingerprint(app_b)[:12]}; pools llm-h100)" in out
        assert f"routers of the deployed app run config fp {config_fingerprint(app_a)[:12]}" in out
        assert "WARNING" in out and "0 live replicas" not in out
    finally:
        serve.shutdown()
