"""Access on local Ray (SimEngine): the ingress's bearer token and the controller's
caller secret, through the deployed app (docs/deploy.md, "Security").

One app (one pool, one simulated replica at 1/10 real time) with ``auth.token_env``
set; the token is in this process's environment before Ray starts, so the Ray
workers (the ingress replica) inherit it, as the rendered manifests give it to
every Ray container.

* Every route of the ingress answers 401 (OpenAI-style body, ``WWW-Authenticate``)
  without the token or with a wrong one, and serves with the right one;
  Serve's health routes stay open.
* A foreign caller's ``push`` / ``report_arrivals`` / ``pin`` on the controller is
  refused and counted, while the app's own replica and ingress (which hold the
  secret) keep reporting: the only refusals counted are the foreign ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from orchestrator.access import ControllerAccessError  # noqa: E402
from replicas.names import CONTROLLER_NAME, CONTROLLER_NAMESPACE  # noqa: E402
from replicas.telemetry import ReplicaSnapshot  # noqa: E402
from tests.ray_state import free_port  # noqa: E402

pytestmark = pytest.mark.ray

MODEL = "sim-llama"
TOKEN_ENV = "CASCADE_TEST_API_TOKEN"
TOKEN = "test-token-6b1f0c2e9a"
CONFIG: dict[str, Any] = {
    "name": "access",
    "model": {"name": MODEL, "engine": "sim", "max_model_len": 4096, "max_num_seqs": 16},
    "pools": [{"name": "llm", "accelerator": "H100", "min_replicas": 1, "max_replicas": 1}],
    "slos": {"classes": [{"name": "default", "ttft_s": 2.0, "tpot_s": 0.1}]},
    "auth": {"token_env": TOKEN_ENV},
    "loops": {"snapshot_period_s": 0.1},
}


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    old = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = TOKEN  # before Ray starts: its workers inherit it
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="cax", dir="/tmp"))  # short: Ray's socket paths
    ray.init(
        address="local",
        num_cpus=4,
        resources={"accelerator_type:H100": 4},
        include_dashboard=False,
        namespace="cascade",
        _temp_dir=str(temp),
    )
    from orchestrator.app import build_app

    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(
            build_app({"config": CONFIG, "time_scale": 0.1}), name="cascade", route_prefix="/"
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        if old is None:
            os.environ.pop(TOKEN_ENV, None)
        else:
            os.environ[TOKEN_ENV] = old


def _auth(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def _until(cond: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _assert_401(r: requests.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    error = r.json()["error"]
    assert error["type"] == "AuthenticationError" and error["code"] == 401 and error["message"]


def test_models_need_the_token(base: str) -> None:
    for token in (None, "wrong-token"):
        _assert_401(requests.get(f"{base}/v1/models", headers=_auth(token), timeout=30))
    _assert_401(requests.get(f"{base}/v1/models", headers={"Authorization": TOKEN}, timeout=30))
    r = requests.get(f"{base}/v1/models", headers=_auth(TOKEN), timeout=30)
    assert r.status_code == 200, r.text
    assert [m["id"] for m in r.json()["data"]] == [MODEL]


def test_completions_and_chat_need_the_token(base: str) -> None:
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 4}
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    for path, payload in (("/v1/completions", body), ("/v1/chat/completions", chat)):
        for token in (None, "wrong-token", TOKEN + "x"):
            r = requests.post(f"{base}{path}", json=payload, headers=_auth(token), timeout=60)
            _assert_401(r)
        r = requests.post(f"{base}{path}", json=payload, headers=_auth(TOKEN), timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 4


def test_health_routes_stay_open(base: str) -> None:
    assert requests.get(f"{base}/-/healthz", timeout=30).status_code == 200
    routes = requests.get(f"{base}/-/routes", timeout=30)
    assert routes.status_code == 200 and "/" in routes.json()


def _snapshot() -> ReplicaSnapshot:
    return ReplicaSnapshot(replica_id="intruder", pool="llm", time_s=time.time())


def test_foreign_calls_to_the_controller_are_refused_and_counted(base: str) -> None:
    controller = ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)

    def status() -> dict[str, Any]:
        return dict(ray.get(controller.status.remote(), timeout=30))

    # the app's own replica reports, and the ingress's arrivals arrive (both hold the secret)
    requests.post(
        f"{base}/v1/completions",
        json={"model": MODEL, "prompt": "hello", "max_tokens": 4},
        headers=_auth(TOKEN),
        timeout=60,
    )
    st = _until(lambda: (s := status())["replicas"] and s["arrival_rates"] and s, "own reports")
    received = st["snapshots_received"]
    calls = [
        ("push", lambda **kw: controller.push.remote([_snapshot()], **kw)),
        ("report_arrivals",
         lambda **kw: controller.report_arrivals.remote({"default": (1000, 1.0, 1.0)}, 1.0, **kw)),
        ("pin", lambda **kw: controller.pin.remote("llm", 1, **kw)),
    ]  # fmt: skip
    for method, call in calls:
        for kwargs in ({}, {"secret": "guessed"}):
            with pytest.raises(ControllerAccessError, match=rf"refused {method}\(\)"):
                ray.get(call(**kwargs), timeout=30)
    after = _until(lambda: (s := status())["snapshots_received"] > received + 3 and s, "pushes")
    assert after["refused_calls"] == {"push": 2, "report_arrivals": 2, "pin": 2}
    assert "intruder" not in after["replicas"] and after["pinned"] == {}
    assert after["arrival_rates"]["default"] < 100  # the foreign 1000 requests/s never counted


def test_cascade_pin_passes_the_secret_and_says_what_it_changes(
    base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from orchestrator import pin_cli

    controller = ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
    before = dict(ray.get(controller.status.remote(), timeout=30))["refused_calls"]
    assert pin_cli.run(argparse.Namespace(pool="llm", replicas="1")) == 0
    assert "[cascade pin] pool llm: pinned to 1 replicas (was: the allocator's, target 1)" in (
        capsys.readouterr().err
    )
    assert ray.get(controller.status.remote(), timeout=30)["pinned"] == {"llm": 1}
    with pytest.raises(ValueError, match=r"replicas 2 outside \[1, 1\]"):
        pin_cli.run(argparse.Namespace(pool="llm", replicas="2"))
    assert pin_cli.run(argparse.Namespace(pool="llm", replicas="auto")) == 0
    assert "pool llm: back to the allocator (was: pinned to 1); pins now: none" in (
        capsys.readouterr().err
    )
    st = dict(ray.get(controller.status.remote(), timeout=30))
    assert st["pinned"] == {} and st["refused_calls"] == before  # the CLI holds the secret
