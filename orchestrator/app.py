"""Build the Cascade Serve application from the one config file.

``build_app({"config": PATH | YAML text | mapping})`` is the import path in a
Serve config / KubeRay ``serveConfigV2`` (``orchestrator.app:build_app``). It
starts (or finds) the detached controller actor and returns one application:

* one ``CascadeLLMServer`` deployment per pool (named after the pool), with the
  ``CascadeRequestRouter`` and the Plan-driven autoscaling policy; the engine is
  real vLLM (``model.engine: vllm``) or ``SimLLMEngine`` (``sim``);
* ``cascade-ingress``: the OpenAI-compatible ``CascadeIngress`` splitting traffic
  over the pools by the Plan's weights and applying admission; with
  ``auth.token_env`` set, every route needs ``Authorization: Bearer <token>``.

Each deployment gets the cluster's controller secret in its bind kwargs
(``controller_start``): the controller refuses mutating calls without it.

Each pool's replicas ask for ``accelerator_type:<accelerator>`` as a custom
resource (0.001 of one), so a pool lands only on nodes of its GPU type (on
KubeRay: the worker group's resources; locally: ``cascade up`` declares them).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ray import serve
from ray.serve.config import AutoscalingConfig, AutoscalingPolicy, RequestRouterConfig
from ray.serve.deployment import Application
from ray.serve.llm import LLMConfig, build_llm_deployment
from ray.serve.llm.ingress import make_fastapi_ingress

from orchestrator.access import BearerAuthMiddleware
from orchestrator.config import CascadeConfig, PoolConfig, load_config, parse_config
from orchestrator.controller_start import ensure_controller
from orchestrator.ingress import CascadeIngress
from orchestrator.router_adapter import CascadeRequestRouter
from orchestrator.sim_engine_options import sim_engine_options
from replicas.deployment import CascadeLLMServer
from replicas.sim_llm_engine import SimLLMEngine

INGRESS_NAME = "cascade-ingress"
# Logical CPUs per replica: a simulated replica is a coroutine; a vLLM-CPU replica
# is a real process (its engine's placement group asks for its own CPU).
SIM_REPLICA_CPUS = 0.05
VLLM_REPLICA_CPUS = 0.1
INGRESS_CPUS = 0.1


def resolve_config(source: str | Path | Mapping[str, Any] | CascadeConfig | None) -> CascadeConfig:
    """A config from a path, YAML text, a mapping, or the default example."""
    if isinstance(source, CascadeConfig):
        return source
    if source is None:
        return load_config()
    if isinstance(source, Mapping):
        return parse_config(source)
    text = str(source)
    if "\n" not in text and Path(text).is_file():
        return load_config(text)
    data = yaml.safe_load(text)
    if not isinstance(data, Mapping):
        raise ValueError(f"config is neither a file nor a YAML mapping: {text[:80]!r}")
    return parse_config(data, "<inline config>")


def accelerator_resource(pool: PoolConfig) -> str:
    return f"accelerator_type:{pool.accelerator}"


def pool_llm_config(cfg: CascadeConfig, pool: PoolConfig, *, time_scale: float = 1.0) -> LLMConfig:
    """The ``LLMConfig`` of one pool (sim or real vLLM)."""
    deployment_config: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": 0},
        "max_ongoing_requests": max(cfg.model.max_num_seqs * 2, 8),
        "graceful_shutdown_timeout_s": 60,
    }
    if cfg.model.engine == "vllm":
        from replicas.vllm_config import build_llm_config

        return build_llm_config(
            cfg.model,
            pool,
            prefill_tpot_s=cfg.prefill_tpot_s(),
            prefill_min_tokens=cfg.model.prefill_min_tokens,
        )
    return LLMConfig(
        model_loading_config={"model_id": cfg.model.name},
        placement_group_config={
            "bundles": [{"CPU": SIM_REPLICA_CPUS, accelerator_resource(pool): 0.001}]
        },
        deployment_config=deployment_config,
        log_engine_metrics=False,
    )


def pool_engine_cores(cfg: CascadeConfig, pool: PoolConfig) -> int:
    """Cores each replica of a vLLM pool claims on its host (0: vLLM binds)."""
    if cfg.model.engine != "vllm":
        return 0
    from replicas.vllm_config import engine_cores

    return engine_cores(pool)


def sim_engine_cls(cfg: CascadeConfig, pool: PoolConfig, time_scale: float = 1.0) -> Any:
    """The ``engine_cls`` an ``LLMServer`` of ``pool`` takes for a simulated
    engine (``SimLLMEngine`` with the pool's options bound): also what a stock
    Ray Serve LLM app is given to serve the same simulated replicas."""
    return functools.partial(_SimEngineFactory, options=sim_engine_options(cfg, pool, time_scale))


def build_app(args: Mapping[str, Any] | None = None) -> Application:
    """Serve application builder (see module docstring). ``args``: ``config``
    (path, YAML text or mapping; default: the default example) and optional
    ``time_scale`` (SimEngine sleep multiplier, for tests)."""
    args = dict(args or {})
    cfg = resolve_config(args.get("config"))
    time_scale = float(args.get("time_scale", 1.0))
    cfg_dict = cfg.model_dump(mode="json")
    secret = ensure_controller(cfg).secret  # the deployments pass it to the controller
    pool_apps: dict[str, Application] = {}
    llm_configs: dict[str, LLMConfig] = {}
    for pool in cfg.pools:
        llm_config = pool_llm_config(cfg, pool, time_scale=time_scale)
        llm_configs[pool.name] = llm_config
        engine_cls: Any = None
        if cfg.model.engine == "vllm":
            from replicas.vllm_stats import CascadeVLLMEngine

            engine_cls = CascadeVLLMEngine  # Ray's VLLMEngine + scheduler stats
        if cfg.model.engine == "sim":
            engine_cls = sim_engine_cls(cfg, pool, time_scale)
        options: dict[str, Any] = {
            "name": pool.name,
            "request_router_config": RequestRouterConfig(
                request_router_class=CascadeRequestRouter,  # type: ignore[arg-type]
                request_router_kwargs={"config": cfg_dict},
            ),
        }
        if pool.min_replicas == pool.max_replicas:
            # nothing to scale: a fixed count, so Serve's autoscaling bookkeeping
            # (per request on the handles, periodic on the replicas, the policy
            # call each control loop) costs the engines' cores nothing
            options.update(autoscaling_config=None, num_replicas=pool.max_replicas)
        else:
            options["autoscaling_config"] = AutoscalingConfig(
                min_replicas=pool.min_replicas,
                max_replicas=pool.max_replicas,
                initial_replicas=pool.start_replicas,
                policy=AutoscalingPolicy(policy_function="orchestrator.autoscale:plan_policy"),
                upscale_delay_s=0.0,
                downscale_delay_s=0.0,
            )
        pool_apps[pool.name] = build_llm_deployment(
            llm_config,
            bind_kwargs={
                "pool": pool.name,
                "accelerator": pool.accelerator,
                "engine_cls": engine_cls,
                "snapshot_period_s": cfg.loops.snapshot_period_s,
                "telemetry": cfg.loops.telemetry,
                "controller_secret": secret,
                "first_chunk_immediate": cfg.model.first_chunk == "immediate",
                "engine_cores": pool_engine_cores(cfg, pool),
            },
            override_serve_options=options,
            deployment_cls=CascadeLLMServer,
        )
    from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata

    first = cfg.pools[0].name
    model_id = cfg.model.name
    ingress_cls = make_fastapi_ingress(CascadeIngress, app=ingress_asgi_app(cfg.auth.token_env))
    return serve.deployment(  # type: ignore[attr-defined]
        ingress_cls, **ingress_options(list(llm_configs.values()))
    ).bind(
        llm_deployments={model_id: pool_apps[first]},
        model_cards={model_id: to_model_metadata(model_id, llm_configs[first])},
        pool_handles=pool_apps,
        config=cfg_dict,
        controller_secret=secret,
    )


def ingress_asgi_app(token_env: str | None) -> Any:
    """Ray Serve LLM's own FastAPI app for the ingress (its middlewares: request
    ids, CORS, HTTP metrics, errors), with ``BearerAuthMiddleware`` right inside
    CORS when ``token_env`` is set: a request without the token is refused before
    any route runs, and its 401 still carries CORS headers (browsers can read
    it). The token is read in the ingress process, never here."""
    from ray.llm._internal.serve.core.ingress.ingress import init
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware

    app = init()
    if token_env:
        stack = app.user_middleware  # outermost first
        cors = [i for i, m in enumerate(stack) if getattr(m, "cls", None) is CORSMiddleware]
        at = cors[0] + 1 if cors else 0
        stack.insert(at, Middleware(BearerAuthMiddleware, token_env=token_env))
    return app


def ingress_options(llm_configs: list[LLMConfig]) -> dict[str, Any]:
    """The ingress deployment's Serve options: exactly stock Ray Serve LLM's
    (``OpenAiIngress.get_deployment_options``: ``max_ongoing_requests`` and the
    autoscaling target at 1e9), plus our name and a fractional CPU.

    Why stock's: a plain ``serve.deployment`` gets Serve's default
    ``max_ongoing_requests=5``, so at most five requests were inside the ingress
    at once and the rest queued in the HTTP proxy. With streams of ~3 s that
    capped the whole app at ~1.5 req/s, where stock Ray (same replicas) served
    3.7 req/s (docs/benchmarks.md, "Serving path"). The ingress must never
    admit fewer requests than the replicas behind it can hold.
    """
    options = CascadeIngress.get_deployment_options(list(llm_configs))
    options["name"] = INGRESS_NAME
    options["ray_actor_options"] = {"num_cpus": INGRESS_CPUS}
    return options


class _SimEngineFactory(SimLLMEngine):
    """``SimLLMEngine`` with its options bound (``LLMServer`` calls
    ``engine_cls(llm_config)``; the options travel in a partial)."""

    def __init__(self, llm_config: Any, *, options: Mapping[str, Any]) -> None:
        llm_config.engine_kwargs = {
            **(llm_config.engine_kwargs or {}),
            "cascade_sim": dict(options),
        }
        super().__init__(llm_config)
