"""Input checks shared by every estimator.

Estimators never partially apply a bad batch: a batch is validated whole before
any state changes, so a ``ValueError`` leaves the estimator exactly as it was.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def as_samples(values: ArrayLike, *, what: str = "values", nonnegative: bool = True) -> FloatArray:
    """Return ``values`` as a 1-D float64 array, or raise ``ValueError``.

    Rejects: empty input, non-finite entries (NaN, ±inf) and, when ``nonnegative``
    (latencies, token counts), negative entries. The message names ``what`` and the
    first offending index so a caller can point at the bad record.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    elif arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what}: empty array (no samples)")
    finite = np.isfinite(arr)
    if not finite.all():
        i = int(np.argmin(finite))
        raise ValueError(f"{what}[{i}] = {arr[i]!r}: samples must be finite (no NaN or inf)")
    if nonnegative and arr.min() < 0.0:
        i = int(np.argmin(arr))
        raise ValueError(f"{what}[{i}] = {arr[i]!r}: latencies must be >= 0")
    return arr


def as_times(times: ArrayLike, n: int, *, after: float | None) -> FloatArray:
    """Validate arrival times (seconds) for ``n`` samples: finite, non-decreasing,
    same length as the samples, and not earlier than ``after`` (the last time seen)."""
    arr = np.asarray(times, dtype=np.float64).reshape(-1)
    if arr.size != n:
        raise ValueError(f"times: length {arr.size} does not match {n} values")
    if not np.isfinite(arr).all():
        raise ValueError("times: must be finite (no NaN or inf)")
    if n > 1 and np.any(np.diff(arr) < 0):
        i = int(np.argmax(np.diff(arr) < 0)) + 1
        raise ValueError(f"times[{i}] = {arr[i]!r}: times must be non-decreasing")
    if after is not None and arr[0] < after:
        raise ValueError(f"times[0] = {arr[0]!r} is earlier than the last time seen ({after!r})")
    return arr


def check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
