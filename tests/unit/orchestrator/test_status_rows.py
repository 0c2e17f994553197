"""``cascade status``'s routers table from the controller's status dict."""

from dataclasses import asdict

from orchestrator.contracts import RouterReport
from orchestrator.serve_cli import router_rows


def test_router_rows_show_what_each_router_holds() -> None:
    fresh = RouterReport(0, (0.0, 1.0, 1.0, 0.5), 0, 0, {}, float("inf"))
    busy = RouterReport(41, (0.1, 0.9, 1.2, 0.4), 120, 2, {"r1": 70, "r2": 50}, 0.12)
    status = {
        "routers": {
            "llm-h100@n:2:b": {"seen_s_ago": 0.1, "fit_matches_plan": True, **asdict(busy)},
            "llm-a100@n:1:a": {"seen_s_ago": 0.2, "fit_matches_plan": False, **asdict(fresh)},
        }
    }
    assert router_rows(status) == [
        ("llm-a100@n:1:a", "v0", "inf s", "no", "0", "0"),
        ("llm-h100@n:2:b", "v41", "0.12 s", "yes", "120", "2"),
    ]
    assert router_rows({}) == []
