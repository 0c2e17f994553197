"""Unit tests run the pure core only: importing Ray or vLLM here is an error.

A meta-path finder refuses ``ray`` and ``vllm`` (and their submodules), so a
pure module that grows a Ray/vLLM import fails its unit tests immediately.
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


for _name in list(sys.modules):
    if _name.split(".")[0] in _BLOCKED:
        del sys.modules[_name]
sys.meta_path.insert(0, _BlockAdapters())
