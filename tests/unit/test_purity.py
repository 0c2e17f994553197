"""The pure core imports without Ray or vLLM (the conftest blocks them)."""

import importlib

import pytest

PURE = ["uncertainty", "replicas.telemetry", "policies", "optim", "experiments"]


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_without_ray_or_vllm(module: str) -> None:
    importlib.import_module(module)


@pytest.mark.parametrize("module", ["ray", "vllm"])
def test_adapters_are_blocked(module: str) -> None:
    with pytest.raises(ImportError, match="pure core only"):
        importlib.import_module(module)
