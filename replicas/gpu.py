"""NVML samples of a replica's GPUs: utilization, memory, NVLink and PCIe traffic.

``GpuSampler`` opens NVML once (``pynvml``, from the ``nvidia-ml-py`` package)
for the GPUs this process may use (``CUDA_VISIBLE_DEVICES``, else all) and turns
each ``sample()`` into a ``GpuSample`` averaged over those GPUs. Without a GPU,
driver or NVML library it is disabled cleanly: ``available`` is False,
``reason`` says why, and ``sample()`` returns None (never raises). A counter a
GPU does not support (NVLink on a PCIe card) reads as 0.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

from replicas.telemetry import GpuSample


def _visible_indices(count: int) -> list[int]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return list(range(count))  # unset: every GPU; set but empty: none (CUDA's rule)
    out = []
    for part in env.split(","):
        part = part.strip()
        if part.isdigit() and int(part) < count:
            out.append(int(part))
    return out


class GpuSampler:
    """See the module docstring. ``nvml`` injects the module (tests)."""

    def __init__(self, nvml: ModuleType | None = None) -> None:
        self.available = False
        self.reason = ""
        self._handles: list[Any] = []
        lib: Any = nvml
        try:
            if lib is None:
                lib = importlib.import_module("pynvml")
            lib.nvmlInit()
            count = int(lib.nvmlDeviceGetCount())
            self._handles = [lib.nvmlDeviceGetHandleByIndex(i) for i in _visible_indices(count)]
        except Exception as exc:  # no library, no driver, no GPU: telemetry goes on without
            self.reason = f"NVML unavailable: {type(exc).__name__}: {exc}"
            return
        self._nvml = lib
        if not self._handles:
            self.reason = "no GPU visible to this process"
            return
        self.available = True

    def _read(self, fn: str, *args: Any) -> Any:
        try:
            return getattr(self._nvml, fn)(*args)
        except Exception:  # unsupported counter on this GPU
            return None

    def sample(self) -> GpuSample | None:
        if not self.available:
            return None
        nv = self._nvml
        util, mem, nvlink, pcie = [], [], [], []
        for h in self._handles:
            rates = self._read("nvmlDeviceGetUtilizationRates", h)
            util.append(float(rates.gpu) / 100.0 if rates is not None else 0.0)
            info = self._read("nvmlDeviceGetMemoryInfo", h)
            mem.append(
                float(info.used) / float(info.total) if info is not None and info.total else 0.0
            )
            # PCIe throughput is reported in KB/s over the last 20 ms
            tx = self._read(
                "nvmlDeviceGetPcieThroughput", h, getattr(nv, "NVML_PCIE_UTIL_TX_BYTES", 0)
            )
            rx = self._read(
                "nvmlDeviceGetPcieThroughput", h, getattr(nv, "NVML_PCIE_UTIL_RX_BYTES", 1)
            )
            pcie.append(1024.0 * float((tx or 0) + (rx or 0)))
            nvlink.append(self._nvlink_bytes_per_s(h))
        n = len(self._handles)
        return GpuSample(
            utilization=min(max(sum(util) / n, 0.0), 1.0),
            memory_used_fraction=min(max(sum(mem) / n, 0.0), 1.0),
            nvlink_bytes_per_s=sum(nvlink) / n,
            pcie_bytes_per_s=sum(pcie) / n,
        )

    def _nvlink_bytes_per_s(self, handle: Any) -> float:
        """NVLink data throughput (TX + RX) from NVML field values (KiB/s), 0 if
        the GPU has no NVLink or the driver does not report it."""
        nv = self._nvml
        ids = [getattr(nv, "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX", None),
               getattr(nv, "NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX", None)]  # fmt: skip
        if any(i is None for i in ids):
            return 0.0
        values = self._read("nvmlDeviceGetFieldValues", handle, ids)
        if not values:
            return 0.0
        total = 0.0
        for v in values:
            if getattr(v, "nvmlReturn", 0) == 0:
                total += float(getattr(v.value, "ullVal", 0))
        return 1024.0 * total

    def close(self) -> None:
        if self.available:
            self._read("nvmlShutdown")
            self.available = False
