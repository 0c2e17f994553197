"""Measured all-reduce times read locally from a vidur profile (no global fit).

:class:`optim.interconnect.AllReduceFit` fits one line to every message size of a
layout; for some layouts that line is poor in the 0.1–10 MiB range where decode
steps live (98 % error on 8 NVSwitch ranks, docs/optimizer.md). An
:class:`AllReduceProfile` keeps the measured rows and answers each question at a
message size from the rows near it: the mean and slope from a least-squares line
through the rows with sizes in ``[size/2, 2·size]`` (at least ``MIN_POINTS`` rows;
the window widens until it has them), the variance as the mean of their std².
The profile has ~3 repeats per size, so single rows are noisy; a window of a
factor 4 in size holds dozens of rows.

``ring_scaled(n)`` transfers a measured layout to ``n`` ranks with the ring
all-reduce's cost ``2(n-1)/n · size / bandwidth`` of the slowest link: the time
(mean and std) is multiplied by ``ring_factor(n) / ring_factor(measured)``. It is
how a PCIe pool of 2 or 8 GPUs is modelled from the one PCIe-bound layout the
profiles hold (4 ranks on a pairwise-NVLink node, whose pairs talk over PCIe).

Units: sizes in bytes, times in ms, variances in ms².
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from optim.checks import FloatArray

MIN_POINTS = 8
_COLUMNS = (
    "size",
    "num_workers",
    "devices_per_node",
    "time_stats.all_reduce.mean",
    "time_stats.all_reduce.std",
)


def ring_factor(num_workers: int) -> float:
    """Bytes each rank sends per byte of message in a ring all-reduce, ``2(n-1)/n``."""
    if num_workers < 2:
        raise ValueError(f"an all-reduce needs >= 2 workers, got {num_workers}")
    return 2.0 * (num_workers - 1) / num_workers


def read_layout(
    path: str | Path, num_workers: int, devices_per_node: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(size bytes, mean ms, std ms)`` of the rows of ``path`` with this layout.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file lacks the vidur columns, or has fewer than
            ``MIN_POINTS`` rows for this layout (naming the layouts it does have).
    """
    sizes, means, stds, layouts = [], [], [], set()
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not an all_reduce profile, missing {sorted(missing)}")
        for row in reader:
            layout = (int(row["num_workers"]), int(row["devices_per_node"]))
            layouts.add(layout)
            if layout != (num_workers, devices_per_node):
                continue
            sizes.append(float(row["size"]))
            means.append(float(row["time_stats.all_reduce.mean"]))
            stds.append(float(row["time_stats.all_reduce.std"]))
    if len(sizes) < MIN_POINTS:
        raise ValueError(
            f"{path}: {len(sizes)} rows for num_workers={num_workers}, "
            f"devices_per_node={devices_per_node}; layouts present: {sorted(layouts)}"
        )
    order = np.argsort(sizes, kind="stable")
    return np.array(sizes)[order], np.array(means)[order], np.array(stds)[order]


@dataclass(frozen=True, eq=False)
class AllReduceProfile:
    """The measured rows of one layout (see module docstring).

    Attributes:
        num_workers, devices_per_node: the layout the times stand for (after
            ``ring_scaled``, the target layout).
        size_bytes, mean_ms, std_ms: the rows, sorted by size (read-only arrays).
        source: where the rows come from, for reports (file, measured layout,
            and the ring scaling when applied).
    """

    num_workers: int
    devices_per_node: int
    size_bytes: FloatArray
    mean_ms_rows: FloatArray
    std_ms_rows: FloatArray
    source: str

    @classmethod
    def read(cls, path: str | Path, num_workers: int, devices_per_node: int) -> AllReduceProfile:
        """Load one layout of a vidur ``all_reduce.csv`` (errors: :func:`read_layout`)."""
        size, mean, std = read_layout(path, num_workers, devices_per_node)
        for a in (size, mean, std):
            a.setflags(write=False)
        where = f"{path} ({num_workers} workers, {devices_per_node} per node)"
        return cls(num_workers, devices_per_node, size, mean, std, where)

    def ring_scaled(self, num_workers: int) -> AllReduceProfile:
        """These times transferred to ``num_workers`` ranks on the same links."""
        k = ring_factor(num_workers) / ring_factor(self.num_workers)
        mean, std = self.mean_ms_rows * k, self.std_ms_rows * k
        mean.setflags(write=False)
        std.setflags(write=False)
        return replace(
            self,
            num_workers=num_workers,
            devices_per_node=num_workers,
            mean_ms_rows=mean,
            std_ms_rows=std,
            source=f"{self.source}, ring-scaled ×{k:.3f} to {num_workers} workers",
        )

    def _window(self, size_bytes: float) -> npt.NDArray[np.intp]:
        if not (np.isfinite(size_bytes) and size_bytes > 0):
            raise ValueError(f"size_bytes must be finite and > 0, got {size_bytes}")
        lo, hi = size_bytes / 2.0, size_bytes * 2.0
        while True:
            idx = np.flatnonzero((self.size_bytes >= lo) & (self.size_bytes <= hi))
            if idx.size >= MIN_POINTS or idx.size == self.size_bytes.size:
                return idx
            lo, hi = lo / 2.0, hi * 2.0

    def _line(self, size_bytes: float) -> tuple[float, float]:
        idx = self._window(size_bytes)
        x, y = self.size_bytes[idx], self.mean_ms_rows[idx]
        if np.ptp(x) == 0:
            return float(y.mean()), 0.0
        slope, intercept = np.polyfit(x, y, 1)
        return float(intercept + slope * size_bytes), float(slope)

    def mean_ms(self, size_bytes: float) -> float:
        """Mean time of one all-reduce of ``size_bytes``, ms (> 0)."""
        mean, _ = self._line(size_bytes)
        idx = self._window(size_bytes)
        return max(mean, float(self.mean_ms_rows[idx].min()))

    def slope_ms_per_byte(self, size_bytes: float) -> float:
        """Local bandwidth cost d(mean)/d(size) at ``size_bytes``, ms per byte (>= 0)."""
        return max(self._line(size_bytes)[1], 0.0)

    def var_ms2(self, size_bytes: float) -> float:
        """Variance of one all-reduce of ``size_bytes``, ms² (repeat-to-repeat jitter)."""
        idx = self._window(size_bytes)
        return float(np.mean(self.std_ms_rows[idx] ** 2))
