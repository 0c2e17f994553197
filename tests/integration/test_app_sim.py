"""The Cascade Serve app on local Ray with SimEngine replicas in two pools.

One Ray start for the module (the expensive part on 2 cores): an H100 pool and an
A100 pool of one simulated Llama-2-7B replica each, emulated with custom
resources, running 10x faster than real time. Asserts outcomes over HTTP and in
the controller: serving, streaming, telemetry, the Plan, and clear 4xx errors
after which the server keeps serving.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from orchestrator.controller_start import cluster_secret  # noqa: E402
from tests.ray_state import free_port  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

URL = "http://127.0.0.1:8000"
CONFIG: dict[str, Any] = {
    "name": "it",
    "model": {"name": "sim-llama", "engine": "sim", "max_model_len": 4096, "max_num_seqs": 64},
    "pools": [
        {
            "name": "llm-h100",
            "accelerator": "H100",
            "min_replicas": 1,
            "max_replicas": 2,
            "initial_replicas": 1,
        },
        {
            "name": "llm-a100",
            "accelerator": "A100",
            "min_replicas": 1,
            "max_replicas": 2,
            "initial_replicas": 1,
        },
    ],
    "slos": {
        "classes": [
            {"name": "default", "ttft_s": 2.0, "tpot_s": 0.1, "e2e_s": 20.0},
            # reached only by name (x-cascade-class header / cascade_class body field)
            {"name": "batch", "ttft_s": 10.0, "tpot_s": 0.5},
        ]
    },
    "router": "cascade",
    "admission": {"type": "always"},
    "loops": {"routing_period_s": 1.0},
}


TEMP = Path(tempfile.mkdtemp(prefix="ca", dir="/tmp"))  # short: Ray's socket paths


@pytest.fixture(scope="module")
def app() -> Iterator[Any]:
    ray.init(
        num_cpus=8,
        resources={"accelerator_type:H100": 4, "accelerator_type:A100": 4},
        include_dashboard=True,  # its agent writes the Prometheus service-discovery file
        dashboard_host="127.0.0.1",
        namespace="cascade",
        _temp_dir=str(TEMP),
        _metrics_export_port=free_port(),
        _system_config={"metrics_report_interval_ms": 1000},
    )
    from orchestrator.app import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    serve.run(build_app({"config": CONFIG, "time_scale": 0.1}), name="cascade", route_prefix="/")
    controller = ray.get_actor("cascade-controller", namespace="cascade")
    yield controller
    serve.shutdown()
    ray.shutdown()
    shutil.rmtree(TEMP, ignore_errors=True)


def _complete(prompt_chars: int = 400, max_tokens: int = 32, **extra: Any) -> requests.Response:
    body = {"model": "sim-llama", "prompt": "a" * prompt_chars, "max_tokens": max_tokens, **extra}
    return requests.post(f"{URL}/v1/completions", json=body, timeout=60)


def test_completion_and_streaming_chat(app: Any) -> None:
    r = _complete(max_tokens=12)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 12
    chat = requests.post(
        f"{URL}/v1/chat/completions",
        json={
            "model": "sim-llama",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 6,
            "stream": True,
        },
        stream=True,
        timeout=60,
    )
    assert chat.status_code == 200
    events = [ln for ln in chat.iter_lines() if ln.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content")) == 6


def test_telemetry_reaches_the_controller_and_the_plan_is_solved(app: Any) -> None:
    for _ in range(24):
        assert _complete(prompt_chars=2000, max_tokens=48).status_code == 200
    deadline = time.time() + 60
    status: dict[str, Any] = {}
    plan = None
    while time.time() < deadline:
        status = ray.get(app.status.remote())
        plan = ray.get(app.get_plan.remote())
        view = ray.get(app.get_view.remote())
        done = view is not None and "e2e" in view.cluster and view.cluster["e2e"].n >= 24
        if (
            len(status["replicas"]) == 2
            and plan is not None
            and plan.status.value == "optimal"
            and done
        ):
            break
        time.sleep(1.0)
    assert len(status["replicas"]) == 2, status
    view = ray.get(app.get_view.remote())
    itl = view.pools["llm-h100"].metrics["itl"]
    # simulated Llama-2-7B on an H100 at 10x speed: decode steps of ~1-10 ms
    assert 1e-4 < itl.p50 < 0.05, itl
    assert view.cluster["e2e"].n >= 24
    assert plan is not None and plan.status.value == "optimal", plan
    assert abs(sum(plan.routing["default"].values()) - 1.0) < 1e-6


def test_request_classes_by_header_and_body_reach_the_controller(app: Any) -> None:
    """The gateway classes a request by the x-cascade-class header or the
    cascade_class body field; the ingress reports per-class arrivals, which the
    controller core turns into its per-class traffic estimate."""
    for _ in range(4):
        r = requests.post(
            f"{URL}/v1/completions",
            json={"model": "sim-llama", "prompt": "b" * 200, "max_tokens": 4},
            headers={"x-cascade-class": "batch"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert _complete(prompt_chars=200, max_tokens=4, cascade_class="batch").status_code == 200
    deadline = time.time() + 30
    rates: dict[str, float] = {}
    while time.time() < deadline:
        rates = ray.get(app.status.remote())["arrival_rates"]
        if rates.get("batch", 0.0) > 0:
            break
        time.sleep(0.5)
    assert rates.get("batch", 0.0) > 0, rates
    plan = ray.get(app.get_plan.remote())
    assert plan is not None and set(plan.routing) == {"default", "batch"}


@pytest.mark.parametrize(
    ("request_kwargs", "status"),
    [
        ({"data": "{not json", "headers": {"content-type": "application/json"}}, 400),
        ({"json": {"model": "no-such-model", "prompt": "x", "max_tokens": 4}}, 404),
        ({"json": {"model": "sim-llama", "prompt": "x", "max_tokens": -3}}, 400),
        ({"json": {"model": "sim-llama", "prompt": "a" * 40_000, "max_tokens": 8}}, 400),
    ],
)
def test_bad_requests_get_a_clear_4xx_and_serving_continues(
    app: Any, request_kwargs: dict[str, Any], status: int
) -> None:
    r = requests.post(f"{URL}/v1/completions", timeout=60, **request_kwargs)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.status_code == status or (status == 400 and r.status_code == 422), r.text
    assert "error" in r.json() or "detail" in r.json()
    assert _complete(max_tokens=4).status_code == 200


def _prom_query(port: int, expr: str) -> list[object]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_every_dashboard_query_returns_data_from_the_live_app(app: Any) -> None:
    """A real Prometheus scrapes the running app through Ray's service discovery;
    under load, every PromQL expression of the Grafana dashboard returns data."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        if shutil.which("apt-get") is not None:
            pytest.fail("prometheus is missing: scripts/install.sh installs it with apt-get")
        pytest.skip("no prometheus binary and no apt-get to install it (not Debian)")
    from orchestrator.dashboard import dashboard_queries, write_prometheus_config

    sd = TEMP / "prom_metrics_service_discovery.json"
    deadline = time.monotonic() + 60
    while not sd.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sd.exists(), f"Ray wrote no service-discovery file at {sd}"
    port = free_port()
    cfg = write_prometheus_config(TEMP / "prometheus.yml", sd, scrape_interval="1s")
    prom = subprocess.Popen(
        [prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={TEMP / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # one foreign call, refused: the refused-calls panel has a series to show
        with pytest.raises(ray.exceptions.RayTaskError, match="refused pin"):
            ray.get(app.pin.remote("llm-a100", None, secret="not-the-secret"))
        queries = dashboard_queries()
        missing = list(queries)
        deadline = time.monotonic() + 180
        with ThreadPoolExecutor(4) as pool:
            while missing and time.monotonic() < deadline:
                # bounded load: 8 requests per round, streamed and not
                list(pool.map(lambda k: _complete(1200, 24, stream=bool(k % 2)), range(8)))
                try:
                    missing = [q for q in missing if not _prom_query(port, q)]
                except OSError:  # Prometheus still starting
                    continue
        assert not missing, f"{len(missing)}/{len(queries)} queries returned no data: {missing}"
    finally:
        prom.terminate()
        prom.wait(timeout=30)


def test_serve_autoscaling_follows_the_plan_targets(app: Any) -> None:
    """The custom autoscaling policy returns the controller's target (clipped to
    the deployment's bounds), and Serve converges each pool to it."""
    from types import SimpleNamespace

    from orchestrator.autoscale import plan_policy

    targets = ray.get(app.get_targets.remote())
    assert set(targets) == {"llm-h100", "llm-a100"}
    for pool, target in targets.items():
        ctx = SimpleNamespace(
            policy_state={}, current_num_replicas=1, deployment_name=pool,
            capacity_adjusted_min_replicas=1, capacity_adjusted_max_replicas=2,
        )  # fmt: skip
        # the policy never blocks: the first calls hold while the answer is on its way
        deadline = time.monotonic() + 10
        n, state = plan_policy(ctx)
        while state["source"] != "plan" and time.monotonic() < deadline:
            time.sleep(0.1)
            n, state = plan_policy(ctx)
        assert n == min(max(target, 1), 2) and state["source"] == "plan"
    deadline = time.time() + 180
    running: dict[str, int] = {}
    while time.time() < deadline:
        targets = ray.get(app.get_targets.remote())
        deployments = serve.status().applications["cascade"].deployments
        running = {
            p: sum(
                n for s, n in deployments[p].replica_states.items() if str(s).endswith("RUNNING")
            )
            for p in targets
        }
        if all(running[p] == min(max(t, 1), 2) for p, t in targets.items()):
            break
        time.sleep(2.0)
    assert all(running[p] == min(max(t, 1), 2) for p, t in targets.items()), (running, targets)
    # the policy copy in Serve's controller asks the controller and follows its answer
    report = ray.get(app.status.remote())["autoscaler"]
    assert set(report) == set(targets), report
    assert all(r["seen_s_ago"] < 5.0 and r["source"] == "plan" for r in report.values()), report


def _live_routers(app: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(controller status, the routers that synced in the last 2 s)."""
    st = ray.get(app.status.remote())
    return st, {rid: r for rid, r in st["routers"].items() if r["seen_s_ago"] < 2.0}


def test_plan_and_cascade_fit_reach_the_routers(app: Any) -> None:
    """Every pool's router (in the ingress replica) holds a Plan at most a few
    controller steps old, a view under a second old, and predicts with exactly
    the cascade fit the controller published with that Plan (not the prior)."""
    from orchestrator.routing_core import cascade_theta
    from uncertainty import CascadeModel

    for _ in range(4):
        assert _complete(prompt_chars=1200, max_tokens=16).status_code == 200
    prior = cascade_theta(CascadeModel())
    deadline = time.time() + 30
    st: dict[str, Any] = {}
    live: dict[str, dict[str, Any]] = {}
    while time.time() < deadline:
        st, live = _live_routers(app)
        pools = {rid.split("@")[0] for rid in live}
        if {"llm-h100", "llm-a100"} <= pools and all(
            st["plan_version"] - r["plan_version"] <= 8
            and r["plan_version"] > 0
            and r["view_age_s"] < 1.0
            and r["fit_matches_plan"]
            and tuple(r["cascade_theta"]) != prior
            for r in live.values()
        ):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"routers did not catch up: plan v{st.get('plan_version')}, {live}")


@pytest.fixture(scope="module")
def a100_pair(app: Any) -> Iterator[Any]:
    """The llm-a100 pool pinned to two replicas for the tests that need two
    (one replica start for all of them: the slow part). The drain test, last,
    scales it back to one; unpinned at the end."""
    try:
        ray.get(app.pin.remote("llm-a100", 2, secret=cluster_secret()))
        # a pin shows in get_targets at once (Controller.targets), before any step
        assert ray.get(app.get_targets.remote())["llm-a100"] == 2
        _wait_running("llm-a100", 2)
        yield app
    finally:
        ray.get(app.pin.remote("llm-a100", None, secret=cluster_secret()))


def _pool_requests(pool: str, n: int) -> int:
    """Send ``n`` streamed completions, 4 at a time, straight to ``pool``'s
    deployment handle (its Cascade router runs in this task's process); returns
    how many completed. Waits a second at the end so the router's background
    sync reports its final counts. Runs as a Ray task (see _stream_tokens)."""
    from concurrent.futures import ThreadPoolExecutor as Pool

    from ray import serve as serve_api
    from ray.serve.llm.openai_api_models import CompletionRequest

    handle = serve_api.get_deployment_handle(pool, app_name="cascade").options(stream=True)

    def one(k: int) -> bool:
        req = CompletionRequest(
            model="sim-llama", prompt="a" * (400 + 97 * k), max_tokens=4 + k % 7, stream=True
        )
        lines = [ln for it in handle.completions.remote(req, None) for ln in
                 (it if isinstance(it, list) else [it])]  # fmt: skip
        return any(isinstance(ln, str) and ln.startswith("data: [DONE]") for ln in lines)

    with Pool(4) as ex:
        ok = sum(ex.map(one, range(n)))
    time.sleep(1.5)
    return ok


def test_routing_follows_the_policy(a100_pair: Any) -> None:
    """With two replicas in a pool, Serve asks the Cascade router for every
    request (its decisions grow by at least the requests sent), the policy never
    fails over to the fallback, and each request is served by the replica the
    router chose: per replica, the requests the routers sent there equal the
    requests that replica reports completed."""
    app = a100_pair

    def counts() -> tuple[dict[str, dict[str, int]], dict[str, int]]:
        """(per router: requests routed per replica plus its "_decisions" and
        "_fallbacks"; per replica: requests completed)."""
        routers = ray.get(app.status.remote())["routers"]
        done = {s.replica_id: s.completed for s in ray.get(app.get_snapshots.remote())}
        per_router = {
            rid: {**r["routed"], "_decisions": r["decisions"], "_fallbacks": r["fallbacks"]}
            for rid, r in routers.items()
        }
        return per_router, done

    def since(base: dict[str, dict[str, int]], now: dict[str, dict[str, int]]) -> dict[str, int]:
        # per-router deltas, summed: a router the controller forgot in between
        # (silent for a minute) must not count as negative traffic
        out: dict[str, int] = {}
        for rid, c in now.items():
            for key, k in c.items():
                out[key] = out.get(key, 0) + k - base.get(rid, {}).get(key, 0)
        return out

    # a quiet baseline: both a100 replicas report, and nothing moves for a
    # second (snapshots and router reports lag the requests of earlier tests)
    deadline = time.time() + 60
    base = counts()
    while time.time() < deadline:
        time.sleep(1.0)
        now = counts()
        if len(now[1]) >= 3 and now[:2] == base[:2]:
            break
        base = now
    routed0, done0 = base
    assert len(done0) >= 3, done0
    n = 24
    assert ray.get(ray.remote(num_cpus=0)(_pool_requests).remote("llm-a100", n)) == n
    deadline = time.time() + 30
    while True:
        routed, done = counts()
        delta = since(routed0, routed)
        decisions, fallbacks = delta.pop("_decisions", 0), delta.pop("_fallbacks", 0)
        sent = {r: k for r, k in delta.items() if k}
        served = {r: done[r] - done0.get(r, 0) for r in done if done[r] != done0.get(r, 0)}
        if (sum(served.values()) == n and sent == served) or time.time() > deadline:
            break
        time.sleep(1.0)
    assert decisions >= n, decisions
    assert fallbacks == 0, "the policy failed over to least-outstanding"
    assert sum(served.values()) == n, (served, sent)
    assert sent == served, (sent, served)


def _running(pool: str) -> int:
    deployments = serve.status().applications["cascade"].deployments
    return sum(n for s, n in deployments[pool].replica_states.items() if str(s).endswith("RUNNING"))


def _wait_running(pool: str, n: int, timeout_s: float = 180.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and _running(pool) != n:
        time.sleep(1.0)
    assert _running(pool) == n, (pool, _running(pool), n)


def _stream_tokens(max_tokens: int) -> tuple[str, int]:
    """Stream one long completion through the llm-a100 deployment's handle (so it
    lands on that pool, through the Cascade router); (outcome, text chunks).
    Runs as a Ray task: a handle made in the test driver would keep background
    threads that reconnect Ray after the module shuts it down."""
    from ray import serve as serve_api
    from ray.serve.llm.openai_api_models import CompletionRequest

    handle = serve_api.get_deployment_handle("llm-a100", app_name="cascade").options(stream=True)
    req = CompletionRequest(model="sim-llama", prompt="a" * 200, max_tokens=max_tokens, stream=True)
    chunks = 0
    try:
        for item in handle.completions.remote(req, None):
            for line in item if isinstance(item, list) else [item]:
                if isinstance(line, str) and line.startswith("data: {"):
                    chunks += bool(json.loads(line[6:])["choices"][0].get("text"))
    except Exception as exc:  # a dropped request shows up here
        return f"error: {type(exc).__name__}: {exc}", chunks
    return "ok", chunks


def test_scale_down_drains_requests_in_flight(a100_pair: Any) -> None:
    """With a pool at 2 replicas, start long streams, pin it to 1: Serve removes a
    replica only after its requests finish; every stream completes in full."""
    app = a100_pair
    try:
        stream = ray.remote(num_cpus=0)(_stream_tokens)
        refs = [stream.remote(3000) for _ in range(12)]
        time.sleep(3.0)  # the streams are in flight on both of the pool's replicas
        ray.get(app.pin.remote("llm-a100", 1, secret=cluster_secret()))
        results = ray.get(refs, timeout=300)
        assert all(outcome == "ok" for outcome, _ in results), results
        assert all(chunks == 3000 for _, chunks in results), results
        try:
            _wait_running("llm-a100", 1)
        except AssertionError as exc:  # say where the scale-down stopped
            st = ray.get(app.status.remote())
            # "autoscaler": what Serve's policy last saw (running, Serve's target),
            # the answer it had and what it returned, and how long ago it asked
            keys = ("pinned", "plan_version", "steps", "step_errors", "autoscaler")
            seen = {k: st.get(k) for k in keys}
            targets = ray.get(app.get_targets.remote())
            raise AssertionError(f"{exc}; controller {seen}, targets {targets}") from None
    finally:
        ray.get(app.pin.remote("llm-a100", None, secret=cluster_secret()))
