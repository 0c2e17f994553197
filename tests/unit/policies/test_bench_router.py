"""``cascade bench router`` runs and prints one row per policy × replica count."""

from __future__ import annotations

import argparse

import pytest

from experiments.benchmarks import BENCHMARKS
from experiments.benchmarks import router as bench


def _args(**kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    ns = parser.parse_args([])
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def test_rows_have_the_issue_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "pin_to_one_core", lambda: None)  # leave pytest's affinity alone
    args = _args(replicas=[1, 4], decisions=30, states=2, rounds=1, policies="uncertainty,pow2")
    rows = bench.run(args)
    assert [(r["policy"], r["replicas"]) for r in rows] == [
        ("uncertainty", 1),
        ("pow2", 1),
        ("uncertainty", 4),
        ("pow2", 4),
    ]
    for r in rows:
        assert r["decision_us_p50"] > 0 and r["decision_us_p99"] >= r["decision_us_p50"]
        assert r["row_ref_50ops_us"] > 0 and r["decision_p50_per_ref"] > 0
    assert BENCHMARKS["router"] == "experiments.benchmarks.router"


def test_argument_errors() -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert parser.parse_args(["--replicas", "8,64"]).replicas == [8, 64]
    assert parser.parse_args(["--replicas", "64"]).replicas == [64]
    with pytest.raises(SystemExit):
        parser.parse_args(["--replicas", "0"])
    with pytest.raises(ValueError, match="unknown policy"):
        bench.run(_args(policies="nope", replicas=[2], decisions=1))
