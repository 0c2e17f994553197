"""Fault injection on the Cascade app (local Ray, SimEngine): nothing lost, nothing hung.

One app (ingress, router, controller; one pool ``llm`` of two simulated
Llama-2-7B replicas at 1/10 real time) serves every case, in this order (the
most destructive last):

* garbage telemetry pushed to the controller;
* the controller actor killed (Ray restarts it) under load;
* one pool replica killed while streams run on it.

Each case states what is injected and what the client sees, asserts it, and
prints one row of the reliability table (docs/reliability.md): requests sent,
completed, retried (by the client, after a clean error), failed with a clean
error (an HTTP error, an error event in the stream, or a connection closed with
an error), and lost (a hang past the client's timeout, or a stream that ended
as if complete but short): lost is always 0.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from replicas.names import CONTROLLER_NAME, CONTROLLER_NAMESPACE  # noqa: E402
from tests.builders import garbage_snapshots  # noqa: E402
from tests.ray_state import free_port  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MODEL = "sim-llama"
POOL = "llm"
REPLICAS = 2
CONFIG: dict[str, Any] = {
    "name": "faults",
    "model": {"name": MODEL, "engine": "sim", "max_model_len": 8192, "max_num_seqs": 64},
    "pools": [
        {"name": POOL, "accelerator": "H100", "min_replicas": 2, "max_replicas": 2},
    ],
    "slos": {"classes": [{"name": "default", "ttft_s": 2.0, "tpot_s": 0.1}]},
    "router": "cascade",
    "admission": {"type": "always"},
    "backpressure": {"type": "none"},
}
TIME_SCALE = 0.1
CLIENT_TIMEOUT_S = 60.0  # a request silent for this long is a hang: lost
RESYNC_BOUND_S = 10.0
TEMP = Path(tempfile.mkdtemp(prefix="cft", dir="/tmp"))  # short: Ray's socket paths
HEADER = ("fault injected", "sent", "completed", "retried", "clean error", "lost")
ROWS: list[tuple[str, int, int, int, int, int]] = []


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    port = free_port()  # never 8000: other servers share this host
    # address="local": never attach to a cluster someone else started
    ray.init(address="local", num_cpus=8, resources={"accelerator_type:H100": 4},
             include_dashboard=False, namespace="cascade", _temp_dir=str(TEMP))  # fmt: skip
    from orchestrator.app import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"config": CONFIG, "time_scale": TIME_SCALE}), name="cascade",
              route_prefix="/")  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    _until(lambda: len(_status()["replicas"]) == REPLICAS, "both replicas' snapshots", 180)
    _run_all(base, [_Req(max_tokens=4) for _ in range(4)])  # warm: routers synced
    try:
        yield base
    finally:
        if ROWS:
            print("\n" + _table())
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(TEMP, ignore_errors=True)


# ---- the client -----------------------------------------------------------------------
@dataclass
class _Req:
    """One completion request and what its client saw. ``outcome``: ``completed``
    (every token and ``[DONE]``), ``error`` (a clean error: HTTP status >= 400, an
    error event, or a connection closed with an error), ``lost`` (timed out, or a
    stream that ended without ``[DONE]`` and without an error)."""

    max_tokens: int
    stream: bool = True
    retries: int = 0  # client retries allowed after a clean error before any token
    outcome: str = ""
    error_events: int = 0  # error events received, over all attempts
    tokens: int = 0
    attempts: int = 0
    first_token_s: float = math.nan
    detail: str = ""
    started: threading.Event = field(default_factory=threading.Event)


def _attempt(base: str, req: _Req) -> str:
    body: dict[str, Any] = {"model": MODEL, "prompt": "a" * 200, "max_tokens": req.max_tokens,
            "stream": req.stream, "ignore_eos": True}  # fmt: skip
    req.tokens = 0
    try:
        with requests.post(f"{base}/v1/completions", json=body, stream=req.stream,
                           timeout=CLIENT_TIMEOUT_S) as r:  # fmt: skip
            if r.status_code >= 400:
                req.detail = f"HTTP {r.status_code}: {r.text[:200]}"
                return "error"
            if not req.stream:
                text = r.json()["choices"][0]["text"]
                req.tokens = req.max_tokens if text else 0
                return "completed" if text else "lost"
            for line in r.iter_lines():
                if not line.startswith(b"data: "):
                    continue
                if line == b"data: [DONE]":
                    return "completed" if req.tokens == req.max_tokens else "lost"
                event = json.loads(line[6:])
                if "error" in event:
                    req.error_events += 1
                    req.detail = f"error event: {str(event['error'])[:200]}"
                    return "error"
                if (event.get("choices") or [{}])[0].get("text"):
                    req.tokens += 1
                    if req.tokens == 1:
                        req.first_token_s = time.monotonic()
                        req.started.set()
            req.detail = f"stream ended without [DONE] after {req.tokens} tokens"
            return "lost"
    except requests.Timeout as exc:
        req.detail = f"timeout: {exc!r}"[:200]
        return "lost"
    except requests.RequestException as exc:  # closed with an error: the client knows
        req.detail = f"connection error: {exc!r}"[:200]
        return "error"


def _run(base: str, req: _Req) -> _Req:
    while True:
        req.attempts += 1
        req.outcome = _attempt(base, req)
        if req.outcome != "error" or req.tokens or req.attempts > req.retries:
            return req


def _run_all(base: str, reqs: list[_Req]) -> list[_Req]:
    with ThreadPoolExecutor(len(reqs)) as pool:
        return list(pool.map(lambda r: _run(base, r), reqs))


class _Load:
    """Short requests sent back to back by ``n`` client threads until stopped."""

    def __init__(self, base: str, n: int, max_tokens: int = 8, retries: int = 0) -> None:
        self.base, self.max_tokens, self.retries = base, max_tokens, retries
        self.done: list[_Req] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(n)]

    def __enter__(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.done.append(_run(self.base, _Req(self.max_tokens, retries=self.retries)))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(CLIENT_TIMEOUT_S * 3)


# ---- Ray-side helpers -------------------------------------------------------------------
def _controller() -> Any:
    return ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)


def _status() -> dict[str, Any]:
    return dict(ray.get(_controller().status.remote(), timeout=30))


def _until(cond: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _running_replicas() -> int:
    deployments = serve.status().applications["cascade"].deployments
    return sum(n for s, n in deployments[POOL].replica_states.items() if str(s).endswith("RUNNING"))


def _replica_actor(unique_id: str) -> Any:
    """The Serve replica actor whose replica id is ``unique_id`` (its snapshots' id)."""
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["name"].startswith("SERVE_REPLICA::") and entry["name"].endswith(unique_id):
            return ray.get_actor(entry["name"], namespace=entry["namespace"])
    raise AssertionError(f"no replica actor named after {unique_id}")


def _plan_is_valid(plan: Any) -> bool:
    return plan is not None and all(
        all(math.isfinite(w) and w >= 0 for w in weights.values())
        and math.isclose(sum(weights.values()), 1.0, abs_tol=1e-6)
        for weights in plan.routing.values()
    )


def _ingress_counters() -> dict[str, int]:
    """The ingress's fault counters: server-side ``retried`` and ``stream_errors``."""
    handle = serve.get_deployment_handle("cascade-ingress", app_name="cascade")
    return dict(handle.fault_counters.remote().result(timeout_s=30))


Row = tuple[str, int, int, int, int, int]


def _row(fault: str, reqs: list[_Req], server_retried: int = 0) -> Row:
    """One table row; ``retried`` counts client retries plus the ingress's own."""
    count = {o: sum(r.outcome == o for r in reqs) for o in ("completed", "error", "lost")}
    retried = sum(r.attempts > 1 for r in reqs) + server_retried
    row = (fault, len(reqs), count["completed"], retried, count["error"], count["lost"])
    ROWS.append(row)
    print("\n| " + " | ".join(map(str, row)) + " |")
    return row


def _table() -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in ROWS])


def _lost(reqs: list[_Req]) -> list[str]:
    return [f"{r.outcome}: {r.detail}" for r in reqs if r.outcome == "lost"]


def _load_problems(
    done: list[_Req], threads: int, clean: tuple[str, ...] = ("error event",)
) -> list[str]:
    """The short requests of a ``_Load`` that did not complete, except those that
    were streaming on the lost replica when it died: a clean error (``clean``)
    after their first token, at most one per client thread (each has one request
    in flight). Not yet streaming, a request must complete (a retry at most)."""
    cut = [r for r in done if r.outcome == "error" and r.tokens and r.detail.startswith(clean)]
    cut_ids = {id(r) for r in cut}
    bad = [r.detail for r in done if r.outcome != "completed" and id(r) not in cut_ids]
    if len(cut) > threads:
        bad.append(f"{len(cut)} short streams cut mid-way, more than the {threads} in flight")
    return bad


def _error_events_match(before: dict[str, int], reqs: list[_Req]) -> dict[str, int]:
    """Wait (10 s at most) until the ingress' ``stream_errors`` grew by the error
    events the clients received (every request, every attempt; the counter moves
    once the event is sent, a moment after the client may have read it) and
    ``stream_failures`` by as many (no client left early); returns the counters."""
    events = sum(r.error_events for r in reqs)
    deadline = time.monotonic() + 10.0
    while True:
        after = _ingress_counters()
        grew = {k: after[k] - before[k] for k in ("stream_errors", "stream_failures")}
        if grew == {"stream_errors": events, "stream_failures": events}:
            return after
        if time.monotonic() > deadline:
            raise AssertionError(f"ingress counters grew by {grew}; clients saw {events} events")
        time.sleep(0.2)


# ---- the cases ---------------------------------------------------------------------------
def test_garbage_telemetry_is_rejected_counted_and_the_plan_stays_valid(url: str) -> None:
    """Injected: NaN / negative / inconsistent / future-stamped snapshots and
    non-snapshots pushed to the controller (``push``), 5 batches, while clients
    send requests. Seen: every request completes; the controller counts every
    bad snapshot in ``rejected_snapshots`` and none in its replicas; its loop
    never fails a step; the Plan keeps finite weights summing to 1."""
    before = _status()
    garbage = garbage_snapshots(POOL, time.time())
    with _Load(url, 2) as load:
        for _ in range(5):
            from orchestrator.controller_start import cluster_secret

            secret = cluster_secret(create=False) or ""  # a replica's, so only content is judged
            ray.get(_controller().push.remote(garbage_snapshots(POOL, time.time()), secret=secret))
            time.sleep(0.5)
        want = before["rejected_snapshots"] + 5 * len(garbage)
        after = _until(lambda: (s := _status())["rejected_snapshots"] >= want and s,
                       "the garbage to be rejected", 10)  # fmt: skip
    row = _row("garbage snapshots (NaN, <0, inconsistent)", load.done)
    assert after["rejected_snapshots"] == want
    assert after["step_errors"] == before["step_errors"]
    assert sorted(after["replicas"]) == sorted(before["replicas"])  # no garbage replica
    assert _plan_is_valid(ray.get(_controller().get_plan.remote()))
    assert row[2] == row[1] > 0 and row[5] == 0, _lost(load.done)


def test_a_killed_controller_restarts_and_routing_continues_on_the_last_plan(
    url: str,
) -> None:
    """Injected: ``ray.kill`` of the controller actor (Ray restarts it:
    ``max_restarts``) while clients send requests. Seen: no request fails during
    the outage (the ingress and routers keep their last Plan); the controller is
    back with its checkpoint, and within 10 s of the kill every router has
    synced with it again (a Plan version from after the restart)."""
    before = _status()
    assert before["routers"], "the app's routers had not synced before the kill"
    with _Load(url, 3) as load:
        time.sleep(2.0)
        killed_at = time.monotonic()
        ray.kill(_controller(), no_restart=False)
        # back, with its first Plan after the restart (status answers before it)
        after = _until(
            lambda: (s := _status())["restarts"] > before["restarts"] and s["plan_version"] and s,
            "the controller's restart and first Plan",
            30,
        )
        restart_version = after["plan_version"]

        def resynced() -> dict[str, Any] | None:
            st = _status()
            routers = st["routers"]
            ok = routers and all(
                r["seen_s_ago"] < 1.0 and r["plan_version"] >= restart_version
                for r in routers.values()
            )  # fmt: skip
            return st if ok else None

        _until(resynced, "every router to resync", 30)
        resync_s = time.monotonic() - killed_at
        time.sleep(1.0)  # requests after the resync too
    row = _row(f"controller killed (routers resynced in {resync_s:.1f} s)", load.done)
    assert after["restored"]["state"] == "restored"
    assert restart_version > before["plan_version"]  # never back: routers compare versions
    assert resync_s < RESYNC_BOUND_S
    assert _running_replicas() == REPLICAS
    assert row[2] == row[1] > 0 and row[4] == 0 and row[5] == 0, [
        r.detail for r in load.done if r.outcome != "completed"
    ]


def test_a_replica_killed_mid_stream_fails_its_streams_cleanly_and_is_replaced(
    url: str,
) -> None:
    """Injected: ``ray.kill`` of one pool replica's actor while long streams run
    on both replicas and clients keep sending short requests. Seen: the killed
    replica's streams end with a clean error (an error event or a connection
    closed with an error) within the client's timeout, never a hang and never a
    silently short stream; the survivor's streams complete; requests not yet
    streaming are served (a client retry at most, before any token), and a short
    one streaming on the killed replica ends with an error event too; the
    ingress counts exactly the error events its clients received (a short request
    retried after one included); the pool returns to its two replicas."""
    victim_id = max(_status()["replicas"])  # either one: both carry streams
    counters = _ingress_counters()
    streams = [_Req(max_tokens=1500) for _ in range(8)]
    with ThreadPoolExecutor(len(streams)) as pool, _Load(url, 2, retries=1) as load:
        futures = [pool.submit(_run, url, r) for r in streams]
        _until(lambda: all(r.started.is_set() for r in streams), "every stream's first token")
        ray.kill(_replica_actor(victim_id), no_restart=True)
        killed_at = time.monotonic()
        for f in futures:
            f.result(timeout=CLIENT_TIMEOUT_S * 3)
        ended_s = time.monotonic() - killed_at
        time.sleep(2.0)  # short requests after the streams end too
    reqs = streams + load.done
    after = _error_events_match(counters, reqs)
    row = _row("replica killed mid-stream", reqs, after["retried"] - counters["retried"])
    errored = [r for r in streams if r.outcome == "error"]
    assert row[5] == 0, _lost(reqs)
    assert all(r.detail.startswith("error event") for r in errored), [r.detail for r in errored]
    assert errored, "no stream ran on the killed replica"
    assert all(r.outcome == "completed" for r in streams if r not in errored)
    assert not _load_problems(load.done, 2), _load_problems(load.done, 2)
    assert ended_s < CLIENT_TIMEOUT_S
    _until(lambda: _running_replicas() == REPLICAS, "the pool back at its target", 90)
    _until(lambda: victim_id not in (reps := _status()["replicas"]) and len(reps) == REPLICAS,
           "the new replica's snapshots", 30)  # fmt: skip
    assert all(r.outcome == "completed" for r in _run_all(url, [_Req(8) for _ in range(4)]))
