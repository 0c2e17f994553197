"""GPU sampling: real NVML disables itself here (no GPU); the fake checks the maths."""

import pytest

from replicas.gpu import GpuSampler
from tests.fakes import FakeNvml


def test_without_a_gpu_the_sampler_is_disabled_cleanly() -> None:
    sampler = GpuSampler()  # the real pynvml: no driver or GPU on these machines
    assert not sampler.available
    assert "NVML unavailable" in sampler.reason or "no GPU" in sampler.reason
    assert sampler.sample() is None
    sampler.close()


def test_sample_averages_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nv = FakeNvml(util=(80, 40))
    s = GpuSampler(nvml=nv).sample()  # type: ignore[arg-type]
    assert s is not None
    assert s.utilization == pytest.approx(0.6)
    assert s.memory_used_fraction == pytest.approx(0.5)
    assert s.pcie_bytes_per_s == pytest.approx(2 * 1000 * 1024)
    # GPU 0: 2 x 500,000 KiB/s of NVLink; GPU 1 does not support the counter (0)
    assert s.nvlink_bytes_per_s == pytest.approx(500_000 * 1024)


def test_cuda_visible_devices_selects_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    s = GpuSampler(nvml=FakeNvml(util=(80, 40))).sample()  # type: ignore[arg-type]
    assert s is not None and s.utilization == pytest.approx(0.4) and s.nvlink_bytes_per_s == 0.0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # set but empty: CUDA hides every GPU
    hidden = GpuSampler(nvml=FakeNvml())  # type: ignore[arg-type]
    assert not hidden.available and hidden.reason == "no GPU visible to this process"
