"""Deploying the systems of ``cascade bench ab`` and metering their CPU (Ray; part of
the CLI: it starts them the way ``cascade up`` does).

Stock Ray Serve LLM with one of Ray's routers, or Cascade through ``cascade up``,
on the local Ray head; ``ray_cpu_seconds`` reads every Ray/vLLM process's CPU
time by role so the A/B rows compare what each role spent.
"""

from __future__ import annotations

import argparse
from typing import Any

STOCK_APP = "stock"
PORT = 8000
# the stock ingress asks for a whole CPU by default and would wait forever next
# to the replicas' bundles on a small node (DESIGN.md); Cascade's asks for 0.1
STOCK_INGRESS_CPUS = 0.1


def stock_router_options(name: str) -> dict[str, Any]:
    """The pool deployment's Serve options that select stock router ``name``."""
    from ray.serve.config import DeploymentActorConfig, RequestRouterConfig

    if name == "pow2":  # Ray's default router
        return {}
    if name == "prefix":
        from ray.serve.llm.request_router import PrefixCacheAffinityRouter

        return {
            "request_router_config": RequestRouterConfig(
                request_router_class=PrefixCacheAffinityRouter  # type: ignore[arg-type]
            )
        }
    if name == "capacity":
        from ray.serve.experimental.capacity_queue import CapacityQueue
        from ray.serve.experimental.capacity_queue_router import CapacityQueueRouter

        return {
            "request_router_config": RequestRouterConfig(
                request_router_class=CapacityQueueRouter,  # type: ignore[arg-type]
                request_router_kwargs={"capacity_queue_actor_name": "capacity_queue"},
            ),
            "deployment_actors": [
                DeploymentActorConfig(
                    name="capacity_queue",
                    actor_class=CapacityQueue,
                    init_kwargs={"acquire_timeout_s": 30.0, "token_ttl_s": 600.0},
                )
            ],
        }
    raise ValueError(f"unknown stock router {name!r}")


def stock_pool(pool: Any, bind: str | None) -> Any:
    """The pool as stock Ray Serve LLM runs it with ``--stock-bind``: ``bind`` as
    every replica's ``VLLM_CPU_OMP_THREADS_BIND`` (one value for the deployment:
    all a Serve deployment's ``runtime_env`` can carry), or the pool unchanged
    for ``None``; a ``distinct`` bind on the pool is dropped by the config
    builder, so stock keeps vLLM's own binding. Raises ``ValueError`` for
    ``distinct`` (a per-replica claim stock Ray has no place for)."""
    from replicas.vllm_config import DISTINCT_BIND

    if bind is None:
        return pool
    if bind == DISTINCT_BIND:
        raise ValueError(
            "--stock-bind distinct: stock Ray Serve LLM gives every replica of a deployment "
            "one environment; give a core list (0,1) or nobind"
        )
    return pool.model_copy(
        update={"engine_overrides": {**pool.engine_overrides, "cpu_threads_bind": bind}}
    )


def deploy_stock(
    cfg: Any, router: str, num_cpus: int, timeout_s: float, *, app_name: str = STOCK_APP,
    route_prefix: str = "/", bind: str | None = None,
) -> None:  # fmt: skip
    from ray import serve
    from ray.serve.llm import build_openai_app

    from orchestrator import serve_cli
    from replicas.vllm_config import build_llm_config

    pool = stock_pool(cfg.pools[0], bind)  # refuses a bad bind before Ray starts
    serve_cli.start_ray_head(cfg, num_cpus)
    llm = build_llm_config(cfg.model, pool, deployment_overrides=stock_router_options(router))
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    app = build_openai_app(
        {
            "llm_configs": [llm],
            "ingress_deployment_config": {"ray_actor_options": {"num_cpus": STOCK_INGRESS_CPUS}},
        }
    )
    serve.run(app, name=app_name, route_prefix=route_prefix, blocking=False)
    serve_cli.wait_app_ready(app_name, timeout_s)


def deploy_cascade(config: str, num_cpus: int, timeout_s: float) -> None:
    from orchestrator import serve_cli

    serve_cli.run_up(
        argparse.Namespace(
            config=config, port=PORT, num_cpus=num_cpus, time_scale=1.0, timeout=timeout_s
        )
    )


def _role(title: str) -> str:
    """A process's role from its title: ``ray::<Actor>.<method>`` (Ray retitles an
    actor's process with the task it runs) becomes ``ray::<Actor>``; a Serve
    replica ``ray::ServeReplica:<app>:<deployment>`` keeps only the deployment,
    so both systems' rows compare role by role."""
    role = title.split(" ")[0]
    if role.startswith("ray::ServeReplica:"):
        return "ray::ServeReplica:" + role.split(":", 4)[-1].split(".", 1)[0]
    if role.startswith("ray::"):
        return role.split(".", 1)[0]
    return role


def ray_cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) so far of this host's Ray and vLLM processes:
    ``{pid: (role, seconds)}`` (``_role``). Keyed by pid because a title changes
    while a process lives (summing by title credited a retitled process's whole
    life to one reading); ``cpu_delta`` sums by role."""
    import psutil

    out: dict[int, tuple[str, float]] = {}
    for p in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
        cmd = p.info.get("cmdline") or []
        times = p.info.get("cpu_times")
        if not cmd or times is None or not cmd[0].startswith(("ray::", "VLLM::")):
            continue
        out[int(p.info["pid"])] = (_role(cmd[0]), times.user + times.system)
    return out


def cpu_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """Per-role CPU seconds spent between two ``ray_cpu_seconds`` readings: each
    process's own difference (a process that started in between counts in full;
    one that exited is lost), summed by its role at the second reading."""
    out: dict[str, float] = {}
    for pid, (role, sec) in after.items():
        was = before.get(pid)
        out[role] = out.get(role, 0.0) + sec - (was[1] if was is not None else 0.0)
    return {k: round(v, 2) for k, v in sorted(out.items())}
