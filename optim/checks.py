"""Input checks that name the field and the index of the first bad entry.

Messages look like ``arrival_rate_per_s[c=2] must be finite and >= 0, got nan``
so that a bad telemetry estimate is traced to its source in one read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Axis names used in messages: arrays are indexed [class, pool].
_AXES: dict[int, tuple[str, ...]] = {1: ("i",), 2: ("c", "p")}


def _where(name: str, index: tuple[int, ...], axes: tuple[str, ...]) -> str:
    inner = ", ".join(f"{a}={i}" for a, i in zip(axes, index, strict=True))
    return f"{name}[{inner}]"


def float_array(
    name: str,
    value: Any,
    shape: tuple[int, ...],
    *,
    axes: tuple[str, ...] | None = None,
    strictly_positive: bool = False,
) -> FloatArray:
    """Return ``value`` as a read-only float64 array of ``shape``, all finite and >= 0.

    Args:
        name: field name used in error messages.
        value: anything ``np.asarray`` accepts.
        shape: the required shape.
        axes: index names for messages (default ``("c", "p")`` for 2-D).
        strictly_positive: require > 0 instead of >= 0.

    Raises:
        ValueError: wrong shape, or the first entry that is NaN/inf/negative
            (or zero when ``strictly_positive``), named with its index.
    """
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {value!r}") from exc
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    bad = ~np.isfinite(arr) | (arr <= 0 if strictly_positive else arr < 0)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        names = axes if axes is not None else _AXES.get(len(shape), ("i",) * len(shape))
        bound = "> 0" if strictly_positive else ">= 0"
        raise ValueError(
            f"{_where(name, index, names)} must be finite and {bound}, got {arr[index]}"
        )
    arr.flags.writeable = False
    return arr


def bool_array(name: str, value: Any, shape: tuple[int, ...]) -> BoolArray:
    """Return ``value`` as a read-only bool array of ``shape``.

    Raises:
        ValueError: wrong shape.
    """
    arr = np.array(value, dtype=np.bool_)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    arr.flags.writeable = False
    return arr


def scalar_in(name: str, value: float, low: float, high: float, *, closed_high: bool) -> float:
    """Return ``value`` as a float in ``(low, high)`` or ``(low, high]``.

    Raises:
        ValueError: naming the field, for NaN or out of range.
    """
    v = float(value)
    ok = low < v <= high if closed_high else low < v < high
    if not ok:
        right = "]" if closed_high else ")"
        raise ValueError(f"{name} must be in ({low}, {high}{right}, got {value}")
    return v


def nonnegative(name: str, value: float) -> float:
    """Return ``value`` as a finite float >= 0.

    Raises:
        ValueError: naming the field.
    """
    v = float(value)
    if not (np.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return v
