"""Run a benchmark and print its results as JSON (one object per line)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from experiments.benchmarks import BENCHMARKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True, metavar="NAME")
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--json", action="store_true", help="print JSON only (the default)")
        module.add_arguments(p)
        p.set_defaults(_bench=module)


def run(args: argparse.Namespace) -> int:
    results = args._bench.run(args)
    for row in results:
        sys.stdout.write(json.dumps(row, sort_keys=True) + "\n")
    return 0
