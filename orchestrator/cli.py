"""The ``cascade`` command line: one entry point, one subcommand per capability.

Subcommands are registered in ``COMMANDS`` as ``name -> (module, help)``; each
module exposes ``add_arguments(parser)`` and ``run(args) -> int``, or, for a
module serving several commands (``"module:"``), ``add_<name>_arguments`` and
``run_<name>``. Modules are imported
lazily so that ``cascade bench uncertainty`` never imports Ray or vLLM.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help). Later capabilities add a line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("experiments.benchmarks.cli", "run a benchmark and print JSON"),
    "up": ("orchestrator.serve_cli:", "start local Ray and deploy the app; prints the URL"),
    "status": ("orchestrator.serve_cli:", "pools, replicas, sigma per level, and the Plan"),
    "load": ("orchestrator.load_cli:", "replay a trace through the HTTP API"),
    "down": ("orchestrator.serve_cli:", "shut the app, the controller and Ray down"),
    "pin": ("orchestrator.pin_cli", "pin a pool's replica target on the controller, or 'auto'"),
    "demo": ("experiments.demo", "run the main end-to-end job"),
    "simulate": ("experiments.simulate_cli", "replay a trace through the simulated cluster"),
    "evaluate": (
        "experiments.evaluate_cli",
        "loads x policies through the simulator; report.md, plots, results.jsonl",
    ),
    "profile": ("experiments.profile_cli", "measure a local engine and write a step profile"),
    "k8s": ("orchestrator.k8s_cli", "render KubeRay manifests from a config; validate manifests"),
    "dashboard": ("orchestrator.dashboard_cli", "export or push the Grafana dashboard"),
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Build the parser, importing only the module of the subcommand named in
    ``argv`` (``cascade --help`` imports none)."""
    parser = argparse.ArgumentParser(
        prog="cascade", description="Uncertainty-aware orchestration for LLM serving."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name.rstrip(":"))
            if module_name.endswith(":"):
                getattr(module, f"add_{name}_arguments")(p)
                p.set_defaults(_run=getattr(module, f"run_{name}"))
            else:
                module.add_arguments(p)
                p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args._run(args))
    except (ValueError, FileNotFoundError) as exc:
        # Bad input is reported as one line naming what and where, not a traceback.
        print(f"cascade {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
