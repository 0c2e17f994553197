"""``cascade bench ab --rate auto[:F]``: the load is F of stock Ray's capacity,
measured in the same run on the side-by-side deployment. Ray, the deploys and
the client are the recorders of test_ab_alternating (no Ray here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from experiments.benchmarks import ab
from experiments.benchmarks.ab_capacity import SATURATING_RATE, auto_share
from tests.unit.experiments.test_ab_alternating import SLACK, Recorder, _args


def test_auto_share_parses_auto_and_a_share_and_names_the_flag_on_bad_input() -> None:
    assert auto_share("auto") == 0.8 and auto_share("AUTO:0.5") == 0.5
    assert auto_share("4.0") is None and auto_share("1,2") is None
    for bad in ("auto:", "auto:0", "auto:3", "auto:x", "auto0.5"):
        with pytest.raises(ValueError, match="--rate"):
            auto_share(bad)


class _Capacity(Recorder):
    """The first stock router serves 10 req/s when everything is sent at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(monkeypatch, fast="cascade")
        self.drives: list[tuple[str, float, int | None]] = []

    def drive(self, args: Any, system: str, rate: float, *a: Any, **kw: Any) -> dict[str, Any]:
        self.drives.append((system, rate, kw.get("n")))
        result = super().drive(args, system, rate, *a, **kw)
        if str(kw.get("tag", "")).endswith("-capacity"):
            result["request_throughput"] = 10.0
        return result


def test_auto_rate_offers_a_share_of_the_measured_stock_capacity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = _Capacity(monkeypatch)
    args = _args(tmp_path, "--interleave", "2", "--routers", "pow2")
    args.rate = "auto:0.7"
    rows = ab._run(args)
    # first the capacity run: stock, everything at once (min(120, --requests) of it)
    assert rec.drives[0] == ("stock-pow2", SATURATING_RATE, 20)
    # then every round of both systems at 0.7 × 10 req/s
    assert [(s, r) for s, r, _ in rec.drives[1:]] == [
        ("stock-pow2", 7.0), ("cascade", 7.0), ("cascade", 7.0), ("stock-pow2", 7.0)
    ]  # fmt: skip
    assert {row["rate"] for row in rows} == {7.0}


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("--interleave", "2", "--against-config", str(SLACK)),
        ("--interleave", "2", "--telemetry-off"),
    ],
    ids=["no-interleave", "against-config", "telemetry-off"],
)
def test_auto_rate_without_a_stock_router_beside_cascade_is_refused_before_deploying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...]
) -> None:
    rec = _Capacity(monkeypatch)
    args = _args(tmp_path, *extra)
    args.rate = "auto"
    with pytest.raises(ValueError, match="--rate auto"):
        ab._run(args)
    assert rec.ups == [] and rec.drives == []
