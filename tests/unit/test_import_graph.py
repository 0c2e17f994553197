"""The package rule, enforced on the import graph (DESIGN.md, "The gateway: one
decision path"): arrows run one way.

Every module of the production packages and ``experiments/`` is parsed with
``ast``; every import counts, wherever it is: module level, ``if TYPE_CHECKING:``
blocks, lazy imports inside functions, and ``importlib.import_module("literal")``.
Each arrow ``importer -> imported`` must be allowed by the layers below; any other
fails with the file, the line and the rule it breaks.

Layers, bottom to top (a module may import its own layer and the layers below):

0. ``uncertainty``: the math.
1. ``replicas``: the engine side and the contracts the layers above share
   (telemetry types, the metric table).
2. ``policies`` and ``optim``: siblings, neither imports the other.
3. the orchestrator core: every ``orchestrator`` module that is neither a Ray
   adapter nor CLI (controller core, gateway, contracts, config, metrics,
   dashboard, traces and load generation).
4. the Ray adapters (``ADAPTERS``): the only production modules that import
   ``ray`` or ``vllm`` at module level. Replica-side adapters live in
   ``replicas/`` but are adapters all the same: no module of layers 0-3 imports
   an adapter.
5. ``experiments``: the simulator, baselines, benchmarks, reports; above every
   production module, never imported by one.
6. the CLI, at the top, may import everything: ``orchestrator/cli.py``, the
   modules its ``COMMANDS`` dispatch to, the benchmarks ``cascade bench``
   dispatches to (``experiments.benchmarks.BENCHMARKS``), and any ``*_cli``
   module. Only the CLI imports the CLI.

``k8s`` takes plain data: it imports no other Cascade package, and only the CLI
imports it.

``ALLOWED`` lists arrows that still break the rule, each with why; it is the
visible debt, and an entry that is no longer needed fails too (delete it).

Private members stay in their package: ``obj._name`` outside ``self``/``cls``
fails when ``_name`` is defined (a method, a ``self._name`` attribute, an
``argparse`` default) only in other packages (``ALLOWED_PRIVATE`` is its debt).

At run time, every module below the adapters (and ``k8s``, ``experiments``
outside the CLI) imports with ``ray`` and ``vllm`` blocked (``conftest.py``): the
pure core is importable and testable without Ray, vLLM or a GPU.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("uncertainty", "replicas", "policies", "optim", "orchestrator", "k8s")
PACKAGES = (*PRODUCTION, "experiments")
RAY_LIKE = ("ray", "vllm")

ADAPTERS = frozenset(
    {
        "replicas.deployment",
        "replicas.sim_llm_engine",
        "replicas.vllm_stats",
        "replicas.vllm_scheduler",
        "orchestrator.app",
        "orchestrator.autoscale",
        "orchestrator.controller_actor",
        "orchestrator.controller_start",
        "orchestrator.ingress",
        "orchestrator.router_adapter",
    }
)

PACKAGE_LAYER = {"uncertainty": 0, "replicas": 1, "policies": 2, "optim": 2, "orchestrator": 3}
LAYER_NAMES = {
    0: "uncertainty",
    1: "replicas",
    2: "policies/optim",
    3: "the orchestrator core",
    4: "a Ray adapter",
    5: "experiments",
    6: "the CLI",
}

# Arrows that still break the rule: (importer, imported) -> why it is allowed for
# now. Temporary: each names the work that removes it. Empty: every arrow holds.
ALLOWED: dict[tuple[str, str], str] = {}

# Private members used across packages: (module, member) -> why, for now.
# Empty: every package uses only the others' public names.
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {}


@dataclass(frozen=True, slots=True)
class Arrow:
    importer: str
    imported: str
    path: Path
    line: int
    lazy: bool  # inside a function or a TYPE_CHECKING block


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            out[_module_name(path)] = path
    return out


MODULES = _modules()


def _literal_dict(path: Path, name: str) -> dict[str, Any]:
    """The dict literal assigned to ``name`` at the top of ``path`` (not imported)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                value = ast.literal_eval(node.value)
                assert isinstance(value, dict)
                return value
    raise AssertionError(f"{path}: no {name} literal")


def _cli_modules() -> frozenset[str]:
    commands = _literal_dict(ROOT / "orchestrator" / "cli.py", "COMMANDS")
    benches = _literal_dict(ROOT / "experiments" / "benchmarks" / "__init__.py", "BENCHMARKS")
    names = {"orchestrator.cli"}
    names |= {str(module).rstrip(":") for module, _help in commands.values()}
    names |= {str(module) for module in benches.values()}
    names |= {m for m in MODULES if m.rsplit(".", 1)[-1].endswith("_cli")}
    return frozenset(names)


CLI = _cli_modules()


def layer(module: str) -> int:
    """The layer of a Cascade module outside ``k8s`` (see the module docstring)."""
    if module in CLI:
        return 6
    package = module.split(".")[0]
    if package == "experiments":
        return 5
    if module in ADAPTERS:
        return 4
    return PACKAGE_LAYER[package]


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if MODULES[importer].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(importer: str, node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(importer, node)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            yield sub if sub in MODULES else base  # `from pkg import module`
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        yield node.args[0].value


def _walk(node: ast.AST, lazy: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            yield from _walk(child, True)
            continue
        yield child, inner
        yield from _walk(child, inner)


def arrows() -> list[Arrow]:
    out: list[Arrow] = []
    for importer, path in MODULES.items():
        for node, lazy in _walk(ast.parse(path.read_text(), str(path)), False):
            for target in _targets(importer, node):
                line = getattr(node, "lineno", 0)
                out.append(Arrow(importer, target, path, line, lazy))
    return out


ARROWS = arrows()


def broken_rule(a: Arrow) -> str | None:
    """Why ``a`` breaks the package rule, or None when it is allowed."""
    src, dst = a.importer.split(".")[0], a.imported.split(".")[0]
    if dst in RAY_LIKE:
        if not a.lazy and layer(a.importer) <= 3:
            return f"only Ray adapters, experiments and the CLI import {dst} at module level"
        return None
    if dst not in PACKAGES:
        return None  # the standard library and third-party packages
    if a.imported not in MODULES:
        return f"{a.imported} is not a module of this repository"
    if src == "k8s":
        return None if dst == "k8s" else "k8s takes plain data: it imports no Cascade package"
    have = layer(a.importer)
    if dst == "k8s":
        return None if have == 6 else "k8s takes plain data: only the CLI imports k8s"
    need = layer(a.imported)
    if have == 6 or (src == dst == "experiments" and need < 6):
        return None
    if need == 6:
        return f"{LAYER_NAMES[have]} may not import the CLI: the CLI is the top"
    if dst == "experiments":
        return "production packages never import experiments/"
    if {src, dst} == {"policies", "optim"}:
        return "policies and optim are siblings: neither imports the other"
    if have == 5:
        return None  # experiments: above every production module
    if PACKAGE_LAYER[dst] > PACKAGE_LAYER[src]:
        return (
            f"{src} (layer {PACKAGE_LAYER[src]}) may not import {dst} "
            f"(layer {PACKAGE_LAYER[dst]}): arrows point down"
        )
    if need == 4 and have != 4:
        return f"{LAYER_NAMES[have]} may not import a Ray adapter: arrows point down"
    return None


def _where(a: Arrow) -> str:
    return f"{a.path.relative_to(ROOT)}:{a.line}"


def test_the_graph_holds_every_module() -> None:
    assert len(MODULES) > 100 and "orchestrator.cli" in CLI
    assert set(MODULES) >= ADAPTERS, sorted(ADAPTERS - set(MODULES))
    assert {"orchestrator.serve_cli", "experiments.simulate_cli"} <= CLI


def test_arrows_point_down() -> None:
    problems = []
    for a in ARROWS:
        rule = broken_rule(a)
        if rule is not None and (a.importer, a.imported) not in ALLOWED:
            problems.append(f"{_where(a)}: {a.importer} -> {a.imported}: {rule}")
    assert not problems, "import arrows that break the package rule:\n" + "\n".join(problems)


def test_every_allowance_is_still_needed() -> None:
    broken = {(a.importer, a.imported) for a in ARROWS if broken_rule(a) is not None}
    stale = sorted(set(ALLOWED) - broken)
    assert not stale, f"ALLOWED entries no longer needed (delete them): {stale}"


@pytest.mark.parametrize(
    ("importer", "imported", "lazy", "rule"),
    [
        ("replicas.deployment", "orchestrator.metrics", True, "arrows point down"),
        ("orchestrator.serve_cli", "experiments.simulator", True, None),
        ("orchestrator.loadgen", "experiments.simulator", True, "never import experiments"),
        ("k8s.render", "orchestrator.config", False, "k8s takes plain data"),
        ("orchestrator.controller", "k8s.render", False, "only the CLI imports k8s"),
        ("policies.router", "optim.routing", False, "siblings"),
        ("orchestrator.controller", "orchestrator.ingress", True, "may not import a Ray adapter"),
        ("orchestrator.ingress", "orchestrator.controller", False, None),
        ("replicas.telemetry", "replicas.deployment", True, "may not import a Ray adapter"),
        ("orchestrator.controller", "ray", False, "at module level"),
        ("orchestrator.controller", "ray", True, None),
        ("orchestrator.app", "ray", False, None),
        ("experiments.simulator", "orchestrator.serve_cli", True, "may not import the CLI"),
        ("experiments.simulator", "orchestrator.app", True, None),
        ("orchestrator.cli", "experiments.demo", True, None),
    ],
)
def test_the_rules_catch_what_they_should(
    importer: str, imported: str, lazy: bool, rule: str | None
) -> None:
    found = broken_rule(Arrow(importer, imported, ROOT, 1, lazy))
    if rule is None:
        assert found is None
    else:
        assert found is not None and rule in found, found


PURE = sorted(m for m in MODULES if m.split(".")[0] == "k8s" or layer(m) in (0, 1, 2, 3, 5))


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_without_ray_or_vllm(module: str) -> None:
    importlib.import_module(module)


@pytest.mark.parametrize("module", RAY_LIKE)
def test_ray_and_vllm_are_blocked_in_unit_tests(module: str) -> None:
    with pytest.raises(ImportError, match="pure core only"):
        importlib.import_module(module)


def _private_members() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """Where each private name is defined (packages), and every use of a private
    member on something other than ``self`` / ``cls`` (module, line, name)."""
    defined: dict[str, set[str]] = {}
    used: list[tuple[str, int, str]] = []
    for module, path in MODULES.items():
        package = module.split(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = [node.name]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "set_defaults":
                names = [k.arg for k in node.keywords if k.arg]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                if on_self and isinstance(node.ctx, ast.Store):
                    names = [node.attr]
                elif not on_self and not node.attr.startswith("__"):
                    used.append((module, node.lineno, node.attr))
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    defined.setdefault(name, set()).add(package)
    return defined, used


def test_private_members_stay_in_their_package() -> None:
    defined, used = _private_members()
    problems, seen = [], set()
    for module, line, name in used:
        owners = defined.get(name, set())
        if owners and module.split(".")[0] not in owners:
            seen.add((module, name))
            if (module, name) not in ALLOWED_PRIVATE:
                problems.append(
                    f"{MODULES[module].relative_to(ROOT)}:{line}: {module} uses {name}, private "
                    f"to {', '.join(sorted(owners))}: give it a public name"
                )
    assert not problems, "private members used across packages:\n" + "\n".join(problems)
    stale = sorted(set(ALLOWED_PRIVATE) - seen)
    assert not stale, f"ALLOWED_PRIVATE entries no longer needed (delete them): {stale}"
