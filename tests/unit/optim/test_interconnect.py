"""All-reduce profile fits on the real vidur network profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from optim import fit_all_reduce, layout_for, net_variance_s2

NETWORK = Path(__file__).resolve().parents[4] / "shared" / "data" / "profiles" / "vidur" / "network"
DGX = NETWORK / "a100_dgx" / "all_reduce.csv"
PAIRWISE = NETWORK / "a100_pairwise_nvlink" / "all_reduce.csv"

pytestmark = pytest.mark.skipif(
    not DGX.exists(), reason=f"network profiles not found at {NETWORK} (../shared/data)"
)

# A Llama-2-70B-like step at full load: 80 layers, hidden 8192, 512 tokens.
MODEL = dict(hidden_size=8192, num_layers=80, tokens_per_step=512.0)


def test_fit_on_real_profile() -> None:
    nvlink = fit_all_reduce(DGX, *layout_for("nvlink", 2))
    cross = fit_all_reduce(DGX, *layout_for("cross_node", 2))
    assert (nvlink.num_workers, nvlink.devices_per_node) == (2, 2)
    assert (cross.num_workers, cross.devices_per_node) == (2, 1)
    assert nvlink.points == cross.points == 994  # every message size in the profile
    # Crossing nodes costs >10x the bandwidth term of NVSwitch (measured ~29x).
    assert cross.ms_per_byte > 10 * nvlink.ms_per_byte
    # Linear in size within 30 % on messages >= 1 MiB (measured 15 % and 8 %).
    assert nvlink.max_rel_error < 0.3 and cross.max_rel_error < 0.3
    # 64 MiB over two nodes takes ~11.5 ms in the profile.
    assert cross.mean_ms(64 * 2**20) == pytest.approx(11.47, rel=0.1)
    assert 0 < nvlink.latency_ms < 0.1


def test_interconnect_variance_ranks_nvlink_pcie_cross_node() -> None:
    nvlink = net_variance_s2(fit_all_reduce(DGX, *layout_for("nvlink", 4)), **MODEL)
    pcie = net_variance_s2(fit_all_reduce(PAIRWISE, *layout_for("pcie", 4)), **MODEL)
    cross = net_variance_s2(fit_all_reduce(DGX, *layout_for("cross_node", 4)), **MODEL)
    assert 0 < nvlink < pcie < cross
    assert cross > 10 * nvlink


def test_variance_grows_with_batch_churn() -> None:
    fit = fit_all_reduce(DGX, 2, 1)
    calm = net_variance_s2(fit, **MODEL, tokens_cv=0.1)
    churn = net_variance_s2(fit, **MODEL, tokens_cv=0.5)
    assert churn > 5 * calm


def test_missing_layout_and_bad_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"layouts present: \[\(2, 2\), \(4, 4\)\]"):
        fit_all_reduce(PAIRWISE, 8, 8)
    other = tmp_path / "x.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an all_reduce profile"):
        fit_all_reduce(other, 2)
    with pytest.raises(FileNotFoundError):
        fit_all_reduce(tmp_path / "missing.csv", 2)
    with pytest.raises(ValueError, match="even tp_size"):
        layout_for("cross_node", 3)
