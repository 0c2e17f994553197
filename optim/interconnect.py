"""Interconnect variance coefficients from measured all-reduce profiles.

The profiles are vidur's ``all_reduce.csv`` (``../shared/data/profiles/vidur/network/<node>/``):
per message ``size`` (bytes), ``num_workers`` and ``devices_per_node``, the
min/max/mean/median/std of the collective's time in milliseconds. This module
reads one (the path is an argument; nothing is copied into the repository),
fits, for one (workers, devices-per-node) layout,

* the mean time as ``latency_ms + ms_per_byte · size`` (non-negative least squares),
* the jitter as ``var = jitter_floor_ms2 + jitter_cv2 · mean²`` (medians of the
  small-message variances and of the large-message squared CVs: robust to the
  profile's few-repeat noise),

and turns that into the ``η_p`` of :class:`optim.inputs.ProblemInputs`: the
variance of a replica's per-step all-reduce time at full load, in s².

Which layout a pool's ``interconnect`` means (:func:`layout_for`):
``"nvlink"`` — all TP ranks on one node with NVLink/NVSwitch (``devices_per_node ==
tp``, a DGX profile); ``"pcie"`` — one node without NVLink between every pair (a
``pairwise_nvlink`` profile with ``tp == 4``: pairs are NVLinked, the pairs talk over
PCIe); ``"cross_node"`` — the ranks split over two nodes (``devices_per_node == tp / 2``,
a DGX profile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy.optimize import nnls

from optim.all_reduce_profile import read_layout
from optim.specs import Interconnect

_MS2_TO_S2 = 1e-6


@dataclass(frozen=True)
class AllReduceFit:
    """All-reduce time model for one (num_workers, devices_per_node) layout.

    Attributes:
        num_workers, devices_per_node: the layout (ranks, ranks per node).
        latency_ms: fixed cost per call, ms.
        ms_per_byte: bandwidth cost, ms per byte of message.
        jitter_floor_ms2: variance of a call that does not depend on size, ms².
        jitter_cv2: squared coefficient of variation of large calls.
        points: profile rows used.
        max_rel_error: worst relative error of the mean fit on messages >= 1 MiB.
    """

    num_workers: int
    devices_per_node: int
    latency_ms: float
    ms_per_byte: float
    jitter_floor_ms2: float
    jitter_cv2: float
    points: int
    max_rel_error: float

    def mean_ms(self, size_bytes: float) -> float:
        """Mean time of one all-reduce of ``size_bytes``, ms."""
        return self.latency_ms + self.ms_per_byte * size_bytes

    def var_ms2(self, size_bytes: float) -> float:
        """Variance of one all-reduce of ``size_bytes``, ms²."""
        return self.jitter_floor_ms2 + self.jitter_cv2 * self.mean_ms(size_bytes) ** 2

    def slope_ms_per_byte(self, size_bytes: float) -> float:
        """d(mean)/d(size), ms per byte: the fitted line's, at every size."""
        return self.ms_per_byte


class AllReduceModel(Protocol):
    """What :func:`net_variance_s2` needs of an all-reduce time model (ms, bytes):
    :class:`AllReduceFit` (one line) or
    :class:`optim.all_reduce_profile.AllReduceProfile` (the measured rows, locally)."""

    def mean_ms(self, size_bytes: float) -> float: ...

    def var_ms2(self, size_bytes: float) -> float: ...

    def slope_ms_per_byte(self, size_bytes: float) -> float: ...


def layout_for(interconnect: Interconnect, tp_size: int) -> tuple[int, int]:
    """``(num_workers, devices_per_node)`` of a TP group on this kind of interconnect.

    Raises:
        ValueError: ``cross_node`` with an odd ``tp_size``, or an unknown kind.
    """
    if interconnect in ("nvlink", "pcie"):
        return tp_size, tp_size
    if interconnect == "cross_node":
        if tp_size % 2:
            raise ValueError(f"cross_node needs an even tp_size (two nodes), got {tp_size}")
        return tp_size, tp_size // 2
    raise ValueError(f"unknown interconnect {interconnect!r}")


def fit_all_reduce(
    path: str | Path, num_workers: int, devices_per_node: int | None = None
) -> AllReduceFit:
    """Fit the all-reduce model to the rows of ``path`` with this layout.

    ``devices_per_node`` defaults to ``num_workers`` (one node).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file lacks the vidur columns, or has fewer than 8 rows
            for this layout (naming the layouts it does have).
    """
    dpn = num_workers if devices_per_node is None else devices_per_node
    size, mean, std = read_layout(path, num_workers, dpn)
    # Scale the size column so that NNLS sees comparable magnitudes.
    scale = float(size.max())
    coef, _ = nnls(np.column_stack([np.ones_like(size), size / scale]), mean)
    latency, per_byte = float(coef[0]), float(coef[1]) / scale
    fitted = latency + per_byte * size
    large = size >= 2**20
    rel = np.abs(fitted[large] - mean[large]) / mean[large] if large.any() else np.array([0.0])
    small = size <= np.quantile(size, 0.1)
    floor = float(np.median(std[small] ** 2))
    big = size >= np.quantile(size, 0.5)
    cv2 = float(np.median((std[big] / mean[big]) ** 2))
    return AllReduceFit(
        num_workers=num_workers,
        devices_per_node=dpn,
        latency_ms=latency,
        ms_per_byte=per_byte,
        jitter_floor_ms2=floor,
        jitter_cv2=cv2,
        points=len(size),
        max_rel_error=float(rel.max()),
    )


def net_variance_s2(
    fit: AllReduceModel,
    *,
    hidden_size: int,
    num_layers: int,
    tokens_per_step: float,
    tokens_cv: float = 0.5,
    bytes_per_element: int = 2,
) -> float:
    """``η``: variance of a replica's per-step all-reduce time at full load, s².

    Units: sizes in tokens/elements/bytes, the model's times in ms, the result in
    s² (the optimizer's unit): ``σ²_net = η ρ²`` is added to the step-time variance
    of every replica of the pool (docs/optimizer.md).

    A tensor-parallel transformer step does two all-reduces per layer, each of
    ``tokens · hidden_size · bytes_per_element`` bytes. At full load a step holds
    ``tokens_per_step`` tokens on average with coefficient of variation
    ``tokens_cv`` (batch composition churn). The variance has two parts: the
    batch-size churn through the bandwidth term, ``(2L · slope · σ_bytes)²``
    (``slope`` = d(mean)/d(size) at the step's message, ms per byte)
    (calls within a step move together), and the calls' own jitter,
    ``2L · var(one call)`` (independent calls). The optimizer scales it by ρ².

    Raises:
        ValueError: for non-positive sizes or a negative/non-finite CV.
    """
    for name, value in (
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("tokens_per_step", tokens_per_step),
        ("bytes_per_element", bytes_per_element),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and > 0, got {value}")
    if not (math.isfinite(tokens_cv) and tokens_cv >= 0):
        raise ValueError(f"tokens_cv must be finite and >= 0, got {tokens_cv}")
    calls = 2 * num_layers
    message = tokens_per_step * hidden_size * bytes_per_element
    churn = (calls * fit.slope_ms_per_byte(message) * tokens_cv * message) ** 2
    jitter = calls * fit.var_ms2(message)
    return (churn + jitter) * _MS2_TO_S2
