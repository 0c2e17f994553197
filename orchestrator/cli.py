"""The ``cascade`` command line: one entry point, one subcommand per capability.

Subcommands are registered in ``COMMANDS`` as ``name -> "module"``; each module
exposes ``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported
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
    "demo": ("experiments.demo", "run the main end-to-end job"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cascade", description="Uncertainty-aware orchestration for LLM serving."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._module.run(args))
    except (ValueError, FileNotFoundError) as exc:
        # Bad input is reported as one line naming what and where, not a traceback.
        print(f"cascade {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
