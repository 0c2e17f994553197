"""Unit tests run the pure core only: importing Ray or vLLM here is an error.

A meta-path finder refuses ``ray`` and ``vllm`` (and their submodules), so a
pure module that grows a Ray/vLLM import fails its unit tests immediately.
Unit tests run in their own pytest process (see the Makefile): the Ray tiers
import Ray for real and must not share a process with this finder.
"""

from __future__ import annotations

import importlib.abc
import sys

_BLOCKED = ("ray", "vllm")


class _BlockAdapters(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname.split(".")[0] in _BLOCKED:
            raise ImportError(f"unit tests must not import {fullname!r} (pure core only)")
        return None


if any(name.split(".")[0] in _BLOCKED for name in sys.modules):
    raise RuntimeError(
        "Ray or vLLM is already imported: run tests/unit in its own pytest process "
        "(make test does), not together with tests/integration or tests/e2e"
    )
sys.meta_path.insert(0, _BlockAdapters())
