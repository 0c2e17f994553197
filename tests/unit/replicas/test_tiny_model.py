"""The generated tiny Llama directory: files vLLM needs, a tokenizer that round-trips text,
a vocabulary that matches the model config, idempotent, shape-keyed caching, and the
per-pool shape and CPU defaults that ``replicas.vllm_config`` derives (plain data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from replicas.tiny_model import (
    BOS_TOKEN,
    CACHE_ENV,
    EOS_TOKEN,
    build_tokenizer,
    default_cache_dir,
    ensure_tiny_model,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_model(cache_dir=tmp_path_factory.mktemp("models"))


def _json(path: Path) -> dict:  # type: ignore[type-arg]
    return dict(json.loads(path.read_text()))


def test_config_is_a_llama_whose_vocab_is_the_tokenizers(model_dir: Path) -> None:
    cfg = _json(model_dir / "config.json")
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["model_type"] == "llama"
    assert cfg["vocab_size"] == tok.get_vocab_size()
    assert (cfg["num_hidden_layers"], cfg["hidden_size"]) == (2, 256)
    assert cfg["hidden_size"] % cfg["num_attention_heads"] == 0
    assert cfg["head_dim"] * cfg["num_attention_heads"] == cfg["hidden_size"]
    assert cfg["max_position_embeddings"] >= 4096
    assert cfg["bos_token_id"] == tok.token_to_id(BOS_TOKEN)
    assert cfg["eos_token_id"] == tok.token_to_id(EOS_TOKEN)
    gen = _json(model_dir / "generation_config.json")
    assert gen["eos_token_id"] == cfg["eos_token_id"]


def test_tokenizer_config_declares_fast_tokenizer_specials_and_chat_template(
    model_dir: Path,
) -> None:
    tc = _json(model_dir / "tokenizer_config.json")
    assert tc["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (tc["bos_token"], tc["eos_token"]) == (BOS_TOKEN, EOS_TOKEN)
    assert "messages" in tc["chat_template"] and "add_generation_prompt" in tc["chat_template"]


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world!",
        "The quick brown fox jumps over the lazy dog.",
        "  leading spaces, tabs\tand\nnewlines  ",
        "unicode: héllo wörld, 日本語, emoji 🚀",
        "def f(x):\n    return x ** 2  # code",
        "",
    ],
)
def test_tokenizer_round_trips_text_and_prepends_bos(model_dir: Path, text: str) -> None:
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ids = tok.encode(text).ids
    assert ids[0] == tok.token_to_id(BOS_TOKEN)
    assert all(0 <= i < tok.get_vocab_size() for i in ids)
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_merges_common_words(model_dir: Path) -> None:
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    text = "The request waits in the queue."
    assert len(tok.encode(text).ids) < len(text.encode()) / 2  # BPE, not bytes


def test_training_is_deterministic(model_dir: Path) -> None:
    assert (
        build_tokenizer().to_str()
        == Tokenizer.from_file(str(model_dir / "tokenizer.json")).to_str()
    )


def test_second_call_reuses_the_directory(model_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    again = ensure_tiny_model(cache_dir=model_dir.parent)
    assert again == model_dir
    assert {p.name: p.stat().st_mtime_ns for p in again.iterdir()} == before
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".")]  # no temp dirs


def test_shapes_live_side_by_side(model_dir: Path) -> None:
    deep = ensure_tiny_model(num_layers=4, cache_dir=model_dir.parent)
    assert deep != model_dir
    assert _json(deep / "config.json")["num_hidden_layers"] == 4
    assert _json(model_dir / "config.json")["num_hidden_layers"] == 2
    assert (deep / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()


def test_incomplete_directory_is_replaced(tmp_path: Path) -> None:
    first = ensure_tiny_model(cache_dir=tmp_path)
    (first / "tokenizer.json").unlink()  # e.g. a copy someone truncated by hand
    again = ensure_tiny_model(cache_dir=tmp_path)
    assert again == first
    assert (again / "tokenizer.json").is_file()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_layers": 0}, "num_layers"),
        ({"hidden_size": 250}, "multiple of num_heads"),
        ({"num_heads": 4, "num_kv_heads": 3}, "multiple of num_kv_heads"),
    ],
)
def test_impossible_shapes_are_refused(tmp_path: Path, kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=match):
        ensure_tiny_model(cache_dir=tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    assert ensure_tiny_model().parent == tmp_path / "cache"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir() == Path.home() / ".cache" / "cascade" / "models"


# ---- the pools' tiny shapes, as replicas.vllm_config reads them (plain data, no Ray) --


def test_pool_overrides_pick_the_tiny_shape_and_cpu_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from orchestrator.config import ModelConfig, PoolConfig
    from replicas.vllm_config import llm_config_kwargs

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    model = ModelConfig(engine="vllm", model_path="tiny")
    fast = PoolConfig(name="llm-h100", accelerator="H100", engine_overrides={"num_layers": 2})
    slow = PoolConfig(
        name="llm-a100",
        accelerator="A100",
        min_replicas=1,
        max_replicas=3,
        engine_overrides={"num_layers": 4, "max_num_seqs": 8, "cpu_threads_bind": "1"},
    )
    a = llm_config_kwargs(model, fast, device="cpu")
    b = llm_config_kwargs(model, slow, device="cpu")
    dir_a = Path(a["model_loading_config"]["model_source"])
    dir_b = Path(b["model_loading_config"]["model_source"])
    assert _json(dir_a / "config.json")["num_hidden_layers"] == 2
    assert _json(dir_b / "config.json")["num_hidden_layers"] == 4
    assert a["model_loading_config"]["model_id"] == model.name
    for kw in (a, b):
        ek = kw["engine_kwargs"]
        assert ek["load_format"] == "dummy" and ek["enforce_eager"] is True
        assert ek["gpu_memory_utilization"] <= 0.2  # a share of RAM on CPU, not 0.9
        assert ek["block_size"] % 32 == 0
        assert "num_layers" not in ek and "cpu_threads_bind" not in ek  # Cascade's keys
        assert "accelerator_type" not in kw  # Ray refuses it with CPU bundles
        assert sum(kw["placement_group_config"]["bundles"][0].values()) < 1.0
    assert b["engine_kwargs"]["max_num_seqs"] == 8
    assert b["runtime_env"] == {"env_vars": {"VLLM_CPU_OMP_THREADS_BIND": "1"}}
    assert b["deployment_config"]["name"] == "llm-a100"
    assert b["deployment_config"]["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 3,
        "initial_replicas": 1,
    }


def test_pool_config_refuses_what_cannot_run(tmp_path: Path) -> None:
    from orchestrator.config import ModelConfig, PoolConfig
    from replicas.vllm_config import llm_config_kwargs

    pool = PoolConfig(name="p", accelerator="H100", engine_overrides={"num_layers": 4})
    with pytest.raises(ValueError, match="engine: vllm"):
        llm_config_kwargs(ModelConfig(engine="sim"), pool)
    with pytest.raises(ValueError, match="only apply to model_path: tiny"):
        llm_config_kwargs(ModelConfig(engine="vllm", model_path="/models/llama"), pool)
    with pytest.raises(ValueError, match="device"):
        llm_config_kwargs(ModelConfig(engine="vllm"), pool, model_dir=tmp_path, device="tpu")  # type: ignore[arg-type]


def test_distinct_binding_is_a_per_replica_claim_not_a_pool_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.config import ModelConfig, PoolConfig
    from replicas.vllm_config import engine_cores, llm_config_kwargs

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    model = ModelConfig(engine="vllm", model_path="tiny")

    def pool(**ov: object) -> PoolConfig:
        return PoolConfig(name="p", accelerator="CPU",
                          engine_overrides={"num_layers": 2, **ov})  # fmt: skip

    distinct = pool(cpu_threads_bind="distinct")
    kw = llm_config_kwargs(model, distinct, device="cpu")
    assert "runtime_env" not in kw  # vLLM would refuse "distinct" as a core list
    assert engine_cores(distinct, "cpu") == 1  # ceil(0.8 engine CPUs)
    assert engine_cores(pool(cpu_threads_bind="distinct", engine_cpus=2.5), "cpu") == 3
    assert engine_cores(distinct, "gpu") == 0  # GPU engines: the device is the placement
    assert engine_cores(pool(cpu_threads_bind="1"), "cpu") == 0  # a fixed bind for all
    assert engine_cores(pool(), "cpu") == 0  # vLLM's own binding
    with pytest.raises(ValueError, match="engine_cpus"):
        engine_cores(pool(cpu_threads_bind="distinct", engine_cpus=-1), "cpu")
