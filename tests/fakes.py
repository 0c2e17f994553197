"""The one shared module of fakes, for parts that cannot run on these machines.

Only NVML is faked: there is no GPU or NVIDIA driver here (the real
``pynvml`` is installed and is used to check that the sampler disables itself).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class FakeNvml:
    """A stand-in for ``pynvml`` with two GPUs; GPU 1 has no NVLink counters."""

    NVML_PCIE_UTIL_TX_BYTES = 0
    NVML_PCIE_UTIL_RX_BYTES = 1
    NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX = 138
    NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX = 139

    def __init__(self, util: tuple[int, int] = (80, 40)) -> None:
        self.util = util
        self.shutdown = False

    def nvmlInit(self) -> None: ...

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=self.util[h], memory=0)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(used=40 * 2**30, total=80 * 2**30)

    def nvmlDeviceGetPcieThroughput(self, h: int, counter: int) -> int:
        return 1000  # KB/s, each direction

    def nvmlDeviceGetFieldValues(self, h: int, ids: list[int]) -> list[Any]:
        if h == 1:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return [SimpleNamespace(nvmlReturn=0, value=SimpleNamespace(ullVal=500_000)) for _ in ids]
