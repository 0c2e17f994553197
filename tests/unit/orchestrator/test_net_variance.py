"""σ²_net per pool from the real vidur all-reduce profiles, and its way into the plan."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from orchestrator.config import DEFAULT_CONFIG, CascadeConfig, parse_config
from orchestrator.controller import Controller
from orchestrator.estimates import ClassLoad
from orchestrator.net_variance import NetVariance, observed_interconnect, pool_net_variance_s2
from replicas.profiles import data_dir
from replicas.telemetry import GpuSample
from tests.builders import measured_snapshot

NETWORK = data_dir() / "profiles" / "vidur" / "network"
needs_profiles = pytest.mark.skipif(
    not (NETWORK / "h100_dgx" / "all_reduce.csv").exists(),
    reason=f"network profiles not found at {NETWORK} (../shared/data)",
)


def _config(**pool0: Any) -> CascadeConfig:
    d = yaml.safe_load(DEFAULT_CONFIG.read_text())
    d["pools"][0].update(pool0)
    return parse_config(d)


def _eta(accelerator: str, interconnect: str, tp: int) -> float:
    cfg = _config(accelerator=accelerator, interconnect=interconnect, tp_size=tp)
    return pool_net_variance_s2(cfg, cfg.pools[0])


def test_tp1_has_no_interconnect_variance_even_without_profiles(tmp_path: Path) -> None:
    cfg = _config(tp_size=1, interconnect="pcie")
    assert pool_net_variance_s2(cfg, cfg.pools[0], root=tmp_path) == 0.0
    assert NetVariance(cfg, root=tmp_path).values() == [0.0, 0.0]


@needs_profiles
@pytest.mark.parametrize("accelerator", ["H100", "A100"])
def test_nvlink_below_pcie_and_growing_with_tp(accelerator: str) -> None:
    nv = [_eta(accelerator, "nvlink", tp) for tp in (2, 4, 8)]
    pcie = [_eta(accelerator, "pcie", tp) for tp in (2, 4, 8)]
    assert all(v > 0 for v in nv + pcie)
    assert nv[0] < nv[1] < nv[2] and pcie[0] < pcie[1] < pcie[2]
    # over 10x the variance on PCIe at every TP (measured 38-190x on these
    # profiles; docs/optimizer.md has the table)
    assert all(p > 10 * n for p, n in zip(pcie, nv, strict=True))
    # Llama-2-7B decode step at 256 sequences: per-step σ of a few 0.1 ms on
    # NVLink, a few ms on PCIe (compare ITLs of ~20-30 ms)
    assert 5e-5 < np.sqrt(nv[1]) < 2e-3 and 5e-4 < np.sqrt(pcie[1]) < 1e-2


@needs_profiles
def test_pcie_tp2_and_tp8_are_ring_scaled_from_the_measured_tp4() -> None:
    # the same message on 2 / 8 ranks: time × (2·1/2) / (2·3/4) and × (2·7/8) / (2·3/4)
    from orchestrator.net_variance import all_reduce_profile

    four = all_reduce_profile("A100", "pcie", 4)
    two, eight = all_reduce_profile("A100", "pcie", 2), all_reduce_profile("A100", "pcie", 8)
    size = 2.0 * 2**20
    assert two.mean_ms(size) == pytest.approx(four.mean_ms(size) * (1.0 / 1.5))
    assert eight.mean_ms(size) == pytest.approx(four.mean_ms(size) * (1.75 / 1.5))
    assert "ring-scaled" in eight.source and "ring-scaled" not in four.source


@needs_profiles
def test_layouts_the_profiles_lack_are_refused_naming_the_pool(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"pool 'llm-h100' \(tp_size 4, cross_node\).*"
                       r"layouts present: \[\(2, 2\), \(4, 4\), \(8, 8\)\]"):  # fmt: skip
        _eta("H100", "cross_node", 4)
    with pytest.raises(ValueError, match=r"pool 'llm-h100'.*unknown GPU 'CPU'"):
        _eta("CPU", "nvlink", 2)
    cfg = _config(tp_size=2)
    with pytest.raises(FileNotFoundError, match="pool 'llm-h100'"):
        pool_net_variance_s2(cfg, cfg.pools[0], root=tmp_path)
    # the controller's form never raises: 0 and a note (documented fallback)
    net = NetVariance(cfg, root=tmp_path)
    assert net.values() == [0.0, 0.0]
    assert "no profile" in net.notes["llm-h100"]


def test_nvml_samples_say_which_link_a_pool_uses() -> None:
    rng = np.random.default_rng(0)
    snap = measured_snapshot("h0", "llm-h100", 1.0, 0.01, rng)
    over_nvlink = dataclasses.replace(snap, gpu=GpuSample(0.8, 0.5, 2e9, 1e8))
    over_pcie = dataclasses.replace(snap, gpu=GpuSample(0.8, 0.5, 0.0, 3e9))
    idle = dataclasses.replace(snap, gpu=GpuSample(0.0, 0.5, 0.0, 1e6))
    assert observed_interconnect([over_nvlink], "pcie") == "nvlink"
    assert observed_interconnect([over_pcie], "nvlink") == "pcie"
    assert observed_interconnect([idle], "nvlink") == "nvlink"  # no evidence
    assert observed_interconnect([snap], "pcie") == "pcie"  # no GPU samples
    assert observed_interconnect([over_pcie], "cross_node") == "cross_node"


@needs_profiles
def test_controller_feeds_the_pool_eta_to_the_optimizer() -> None:
    # two identical H100 TP-4 pools, one on NVLink and one on PCIe (the NVML
    # samples say so): the η of each reaches the solve, and with the network
    # term weighted the plan sends more load to the NVLink pool
    d = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for p in d["pools"]:
        p.update(accelerator="H100", tp_size=4, interconnect="nvlink")
    d["optimizer"].update(w_gpu=0.0, w_mem=0.0, w_net=1.0, tail="gaussian")
    cfg = parse_config(d)
    ctl = Controller(cfg)
    rng = np.random.default_rng(3)
    snaps = []
    for i in range(4):
        for pool, link in (("llm-h100", (2e9, 1e8)), ("llm-a100", (0.0, 3e9))):
            s = measured_snapshot(f"{pool}-{i}", pool, 1.0, 0.015, rng)
            snaps.append(dataclasses.replace(s, gpu=GpuSample(0.9, 0.5, *link)))
    plan = ctl.step(1.0, snaps, {"default": ClassLoad(rate_per_s=30.0)})
    eta = ctl.net_variance.values(snaps)
    assert ctl.net_variance.kinds == {"llm-h100": "nvlink", "llm-a100": "pcie"}
    assert eta[1] > 10 * eta[0] > 0
    w = plan.routing["default"]
    assert w["llm-h100"] > w["llm-a100"] + 0.05, plan.reason
