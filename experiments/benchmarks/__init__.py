"""Benchmarks behind ``cascade bench NAME``; each prints JSON to stdout.

``BENCHMARKS`` maps a name to the module that implements it. A benchmark module
exposes ``add_arguments(parser)`` and ``run(args) -> list[dict]``: one JSON object
per element is printed, one per line.
"""

BENCHMARKS: dict[str, str] = {
    "router": "experiments.benchmarks.router",
    "uncertainty": "experiments.benchmarks.uncertainty",
    "controller": "experiments.benchmarks.controller",
    "sim": "experiments.benchmarks.sim",
    "optim": "experiments.benchmarks.optim",
    "overhead": "experiments.benchmarks.overhead",
    "ab": "experiments.benchmarks.ab",
    "cascade-fit": "experiments.benchmarks.cascade_fit",
    "fidelity": "experiments.benchmarks.fidelity",
}
