"""Fault injection: a node removed from a multi-node Ray cluster under load.

A ``ray.cluster_utils.Cluster`` on this host: a head node (Serve's controller and
HTTP proxy, the Cascade ingress and controller; no accelerator) and two worker
nodes with ``accelerator_type:H100``, where the pool ``llm``'s two replicas go
(Serve spreads a deployment's replicas over nodes; the test checks that they are
on different nodes). Removing a worker node kills one replica with its raylet.
Client outcomes are counted as in ``test_faults`` (its helpers) and the row goes
to the same table (docs/reliability.md).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from tests.integration import test_faults as faults  # noqa: E402
from tests.ray_state import free_port  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

WORKER = {"num_cpus": 1, "resources": {"accelerator_type:H100": 1}}
# the controller forgets a replica whose newest snapshot is loops.stale_after_s old
# (5 s: the config's default); plus its last push period, a step and a status call
LOST_REPLICA_BOUND_S = 5.0 + 3.0
TEMP = Path(tempfile.mkdtemp(prefix="cfn", dir="/tmp"))  # short: Ray's socket paths


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, str]]:
    port = free_port()  # never 8000: other servers share this host
    # Cluster writes the head's address to Ray's default temp dir whatever
    # temp_dir says; on a fresh machine that dir does not exist yet
    from ray._private.utils import get_ray_address_file

    Path(get_ray_address_file(None)).parent.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 4, "include_dashboard": False, "temp_dir": str(TEMP)},
    )
    workers = [cluster.add_node(**WORKER) for _ in range(2)]
    ray.init(address=cluster.address, namespace="cascade")
    from orchestrator.app import build_app

    # HeadOnly: one HTTP proxy (every node of this cluster is on the same host)
    serve.start(http_options={"host": "127.0.0.1", "port": port, "location": "HeadOnly"})
    serve.run(build_app({"config": faults.CONFIG, "time_scale": faults.TIME_SCALE}),
              name="cascade", route_prefix="/")  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    faults._until(lambda: len(faults._status()["replicas"]) == 2, "both replicas", 180)
    faults._run_all(base, [faults._Req(max_tokens=4) for _ in range(4)])  # warm
    try:
        yield (cluster, workers), base
    finally:
        if faults.ROWS:
            print("\n" + faults._table())
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(TEMP, ignore_errors=True)


def _routed_to() -> Counter[str]:
    """Requests routed per replica id, summed over the pool's routers (their
    reports to the controller)."""
    routed: Counter[str] = Counter()
    for report in faults._status()["routers"].values():
        routed.update(report.get("routed", {}))
    return routed


def _node_of(replica_id: str) -> str:
    """The node id (hex) of the live Serve replica actor ``replica_id`` (from the GCS:
    no dashboard runs)."""
    from ray._private.state import actors

    for info in actors().values():
        if info["State"] == "ALIVE" and str(info.get("Name", "")).endswith(replica_id):
            return str(info["Address"]["NodeID"])
    raise AssertionError(f"no live actor for replica {replica_id}")


def test_a_removed_node_fails_its_streams_cleanly_and_its_replica_comes_back(
    cluster: tuple[Any, str],
) -> None:
    """Injected: one worker node removed (its raylet and the replica on it) while
    long streams run on both replicas and clients send short requests. Seen: the
    removed node's streams end with a clean error (an error event; a connection
    closed with an error is accepted too: the node's loss can reach Serve as a
    cancellation, see orchestrator.stream_guard), never a hang; the other
    streams complete, and so does every short request not streaming on the lost
    node (a retry at most); the controller drops the lost replica from its view
    within ``LOST_REPLICA_BOUND_S`` while the pool's target (get_targets and the
    Plan) stays two; once a node with
    room joins, the pool is back at two replicas reporting to the controller
    (min = max = 2: the target stays two, Serve places the missing replica)."""
    (ray_cluster, workers), base = cluster
    counters = faults._ingress_counters()
    before = set(faults._status()["replicas"])
    nodes = {_node_of(r) for r in before}
    by_id = {w.node_id: w for w in workers}
    assert len(nodes) == 2 and nodes <= set(by_id), "replicas not spread over the workers"
    streams = [faults._Req(max_tokens=1500) for _ in range(6)]
    with ThreadPoolExecutor(len(streams)) as pool, faults._Load(base, 2, retries=1) as load:
        futures = [pool.submit(faults._run, base, r) for r in streams]
        faults._until(lambda: all(r.started.is_set() for r in streams), "first tokens", 60)
        # the node to remove: the one whose replica the router sent the most to
        # (it carries streams even if the ranking did not split them evenly);
        # the router's counts reach the controller with its next sync
        time.sleep(1.0)
        victim = by_id[_node_of(max(sorted(before), key=_routed_to().__getitem__))]
        removed_at = time.monotonic()
        ray_cluster.remove_node(victim)
        # the controller: the lost replica leaves its view (routing then sizes the
        # pool by the survivor) within the bound, and the pool's target stays two
        # (the lost replica is asked for again, not written off)
        survivors = faults._until(
            lambda: len(r := set(faults._status()["replicas"])) == 1 and r,
            "the lost replica to leave the controller's view",
            LOST_REPLICA_BOUND_S,
        )
        lost_s = time.monotonic() - removed_at
        ctl = faults._controller()
        targets = ray.get(ctl.get_targets.remote(), timeout=30)
        plan = ray.get(ctl.get_plan.remote(), timeout=30)
        for f in futures:
            f.result(timeout=faults.CLIENT_TIMEOUT_S * 3)
        ended_s = time.monotonic() - removed_at
        time.sleep(2.0)
    reqs = streams + load.done
    after = faults._ingress_counters()
    row = faults._row("worker node removed mid-stream", reqs,
                      after["retried"] - counters["retried"])  # fmt: skip
    assert row[5] == 0, faults._lost(reqs)
    errored = [r for r in streams if r.outcome == "error"]
    # clean: an error event (the ingress' answer to a lost replica), or the
    # connection closed with an error; the client knows either way, never hangs
    clean = ("error event", "connection error")
    assert errored and all(r.detail.startswith(clean) for r in errored), [r.detail for r in errored]
    assert all(r.outcome == "completed" for r in streams if r not in errored)
    problems = faults._load_problems(load.done, 2, clean)
    assert not problems, problems
    assert ended_s < faults.CLIENT_TIMEOUT_S
    assert survivors < before and lost_s < LOST_REPLICA_BOUND_S, (survivors, before, lost_s)
    assert targets == {faults.POOL: 2}, targets
    assert plan is not None and plan.pools[faults.POOL].target_replicas == 2
    ray_cluster.add_node(**WORKER)
    faults._until(lambda: faults._running_replicas() == 2, "the pool back at two", 120)
    replicas = faults._until(
        lambda: len(r := set(faults._status()["replicas"])) == 2 and r != before and r,
        "the new replica's snapshots",
        60,
    )
    assert len(replicas & before) == 1  # the survivor, and one new replica
