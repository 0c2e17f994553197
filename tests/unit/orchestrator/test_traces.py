"""Trace loaders reproduce the published figures and refuse bad input precisely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.traces import gamma_bursty, load_azure, load_mooncake, load_trace, mmpp, poisson


def test_azure_conv_reproduces_published_figures() -> None:
    s = load_trace("azure-conv").summary()
    assert s["requests"] == 19366
    assert s["prompt_p50"] == 1020
    assert s["output_p50"] == 129
    assert s["prompt_p99"] == pytest.approx(4142, rel=0.01)
    assert s["output_p99"] == pytest.approx(601, rel=0.01)
    assert s["rate_rps"] == pytest.approx(5.5, abs=0.2)
    assert s["interarrival_cv"] == pytest.approx(1.1, abs=0.25)


def test_mooncake_has_prefix_hashes() -> None:
    t = load_trace("mooncake")
    assert len(t) == 3993
    assert all(
        len(h) == -(-p // 512) for h, p in zip(t.hashes[:50], t.prompt_tokens[:50], strict=True)
    )
    assert t.arrival_s[0] == 0.0 and np.all(np.diff(t.arrival_s) >= 0)


def test_scaling_keeps_shape_and_hits_the_rate() -> None:
    t = load_trace("azure-conv").head(2000)
    s = t.scaled_to_rate(20.0)
    assert s.rate == pytest.approx(20.0)
    np.testing.assert_allclose(np.diff(s.arrival_s), np.diff(t.arrival_s) * t.rate / 20.0)
    with pytest.raises(ValueError, match="rate"):
        t.scaled_to_rate(0.0)


def test_synthetic_generators_are_seeded() -> None:
    a = poisson(1000, 5.0, np.random.default_rng(1))
    b = poisson(1000, 5.0, np.random.default_rng(1))
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    assert a.rate == pytest.approx(5.0, rel=0.1)
    g = gamma_bursty(5000, 5.0, 3.0, np.random.default_rng(2))
    assert g.summary()["interarrival_cv"] > 2.0
    m = mmpp(5000, (2.0, 20.0), (30.0, 10.0), np.random.default_rng(3))
    assert m.summary()["interarrival_cv"] > 1.2
    h = poisson(5000, 5.0, np.random.default_rng(4), heavy_tail=True)
    assert h.summary()["prompt_p99"] > 3 * a.summary()["prompt_p99"] / 2


def test_malformed_input_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "t.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,10,5\nxx,1\n")
    with pytest.raises(ValueError, match=r"t.csv:3: malformed"):
        load_azure(bad)
    j = tmp_path / "m.jsonl"
    j.write_text('{"timestamp": 0, "input_length": 5, "output_length": 2}\n{"timestamp": 1}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2: malformed"):
        load_mooncake(j)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_trace(str(tmp_path / "nope.csv"))
