"""Callbacks that raise, on Ray (issue 16 §1): served by the fallback, counted, held.

Injected (tests/integration/raising_hooks.py): the admission policy raises on
every decision inside the ingress, and the autoscaling policy raises on every
call inside Serve's controller. What the client and the operator see:

* every request is served (admission falls back to admitting), and the ingress
  counts each fallback (``fault_counters()["admission_errors"]``);
* the pool holds its replica count (the policy returns Serve's standing target),
  and the Cascade controller shows the failure under ``status()["autoscaler"]``
  (source ``hold: policy error`` and the error count).

The pure halves (log once, the hold's value) are unit-tested in
tests/unit/orchestrator/test_gateway.py and test_autoscale.py.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from replicas.names import CONTROLLER_NAME, CONTROLLER_NAMESPACE  # noqa: E402
from tests.integration import raising_hooks  # noqa: E402
from tests.ray_state import free_port  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MODEL = "sim-llama"
POOL = "llm"
CONFIG: dict[str, Any] = {
    "name": "raising",
    "model": {"name": MODEL, "engine": "sim", "max_model_len": 8192, "max_num_seqs": 64},
    # min < max: Serve consults the (raising) policy, and a wrong hold would show
    "pools": [
        {
            "name": POOL,
            "accelerator": "H100",
            "min_replicas": 1,
            "max_replicas": 3,
            "initial_replicas": 2,
        },
    ],
    "slos": {"classes": [{"name": "default", "ttft_s": 2.0, "tpot_s": 0.1}]},
    "router": "cascade",
    "admission": {"type": "expected_slo"},
    "backpressure": {"type": "none"},
}
TEMP = Path(tempfile.mkdtemp(prefix="crc", dir="/tmp"))  # short: Ray's socket paths


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    from ray import cloudpickle

    import orchestrator.autoscale as autoscale

    port = free_port()  # never 8000: other servers share this host
    # `tests` is not an installed package (only the project's modules are), so
    # Ray's workers cannot import this module by name: the hook and the raising
    # policy travel by value
    cloudpickle.register_pickle_by_value(raising_hooks)
    ray.init(address="local", num_cpus=8, resources={"accelerator_type:H100": 4},
             include_dashboard=False, namespace="cascade", _temp_dir=str(TEMP),
             runtime_env={"worker_process_setup_hook": raising_hooks.install})  # fmt: skip
    original = autoscale._plan_policy
    autoscale._plan_policy = raising_hooks.raising_plan_policy  # pickled by value by serve.run
    try:
        from orchestrator.app import build_app

        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"config": CONFIG, "time_scale": 0.1}), name="cascade",
                  route_prefix="/")  # fmt: skip
        _until(lambda: len(_status()["replicas"]) == 2, "both replicas' snapshots", 180)
        yield f"http://127.0.0.1:{port}"
    finally:
        autoscale._plan_policy = original
        cloudpickle.unregister_pickle_by_value(raising_hooks)
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(TEMP, ignore_errors=True)


def _status() -> dict[str, Any]:
    controller = ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
    return dict(ray.get(controller.status.remote(), timeout=30))


def _until(cond: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _running() -> int:
    deployments = serve.status().applications["cascade"].deployments
    return sum(n for s, n in deployments[POOL].replica_states.items() if str(s).endswith("RUNNING"))


def _stream(base: str) -> str:
    """One streamed completion; ``completed`` (every token and [DONE]) or what went wrong."""
    body = {"model": MODEL, "prompt": "a" * 200, "max_tokens": 8, "stream": True,
            "ignore_eos": True}  # fmt: skip
    with requests.post(f"{base}/v1/completions", json=body, stream=True, timeout=60) as r:
        if r.status_code >= 400:
            return f"HTTP {r.status_code}: {r.text[:200]}"
        tokens = 0
        for line in r.iter_lines():
            if line == b"data: [DONE]":
                return "completed" if tokens == 8 else f"short: {tokens} tokens"
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                if "error" in event:
                    return f"error event: {event['error']}"
                tokens += bool((event.get("choices") or [{}])[0].get("text"))
    return f"no [DONE] after {tokens} tokens"


def test_a_raising_admission_policy_admits_counts_and_serves_every_request(url: str) -> None:
    handle = serve.get_deployment_handle("cascade-ingress", app_name="cascade")

    def errors() -> int:
        return int(dict(handle.fault_counters.remote().result(timeout_s=30))["admission_errors"])

    # until the ingress holds a view of the pool it admits without asking the
    # policy ("no telemetry yet"): warm it until one request reaches the policy
    _until(lambda: _stream(url) == "completed" and errors() > 0, "the policy consulted", 60)
    before = errors()
    n = 24
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda _: _stream(url), range(n)))
    assert outcomes == ["completed"] * n, outcomes
    assert errors() - before == n  # every request fell back, and was counted once


def test_a_raising_autoscaling_policy_holds_the_pool_and_shows_in_status(url: str) -> None:
    seen = _until(
        lambda: (
            (_status().get("autoscaler") or {}).get(POOL, {}).get("source") == "hold: policy error"
            and _status()["autoscaler"][POOL]
        ),
        "the policy error in the controller's status",
    )
    assert seen["policy_errors"] >= 1, seen
    assert seen["returned"] == 2, seen
    for _ in range(10):  # held at the standing target, not scaled to min or max
        assert _running() == 2
        time.sleep(1.0)
    assert _stream(url) == "completed"
