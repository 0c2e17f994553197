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

import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from tests.integration import raising_hooks  # noqa: E402
from tests.integration import test_faults as faults  # noqa: E402  (its client and Ray helpers)
from tests.ray_state import free_port  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MODEL = faults.MODEL  # the client below is test_faults'
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
        faults._until(lambda: len(faults._status()["replicas"]) == 2, "both replicas' snapshots",
                      180)  # fmt: skip
        yield f"http://127.0.0.1:{port}"
    finally:
        autoscale._plan_policy = original
        cloudpickle.unregister_pickle_by_value(raising_hooks)
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(TEMP, ignore_errors=True)


def _stream(base: str) -> str:
    """One streamed completion of 8 tokens with test_faults' client: ``completed``
    (every token and [DONE]), or the outcome and what the client saw."""
    req = faults._run(base, faults._Req(max_tokens=8))
    return req.outcome if req.outcome == "completed" else f"{req.outcome}: {req.detail}"


def _autoscaler_error() -> dict[str, Any] | None:
    """The pool's autoscaler report in the controller's status, once it shows the hold."""
    view = (faults._status().get("autoscaler") or {}).get(POOL) or {}
    return view if view.get("source") == "hold: policy error" else None


def test_a_raising_admission_policy_admits_counts_and_serves_every_request(url: str) -> None:
    handle = serve.get_deployment_handle("cascade-ingress", app_name="cascade")

    def errors() -> int:
        return int(dict(handle.fault_counters.remote().result(timeout_s=30))["admission_errors"])

    # until the ingress holds a view of the pool it admits without asking the
    # policy ("no telemetry yet"): warm it until one request reaches the policy
    faults._until(lambda: _stream(url) == "completed" and errors() > 0, "the policy consulted", 60)
    before = errors()
    n = 24
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda _: _stream(url), range(n)))
    assert outcomes == ["completed"] * n, outcomes
    assert errors() - before == n  # every request fell back, and was counted once


def test_a_raising_autoscaling_policy_holds_the_pool_and_shows_in_status(url: str) -> None:
    seen = faults._until(_autoscaler_error, "the policy error in the controller's status")
    assert seen["policy_errors"] >= 1, seen
    assert seen["returned"] == 2, seen
    for _ in range(10):  # held at the standing target, not scaled to min or max
        assert faults._running_replicas() == 2
        time.sleep(1.0)
    assert _stream(url) == "completed"
