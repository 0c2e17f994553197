"""Command-line values shared by the experiment commands (pure)."""

from __future__ import annotations

import math


def positive_floats(text: object, flag: str) -> list[float]:
    """``flag``'s value: one or more finite numbers > 0, comma-separated, in the
    order given (``--rate 1.0,4.0``, ``--loads 0.5,0.8``). ``ValueError`` naming
    ``flag`` and the text otherwise."""
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag}: comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{flag}: give at least one value, each > 0; got {text!r}")
    return values


def rate_or_auto(text: str) -> float | None:
    """An argparse type: ``auto`` (None: measure it) or a finite number > 0
    (``--capacity auto``, ``--capacity 17``); ``ArgumentTypeError`` otherwise."""
    import argparse

    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"a positive req/s or auto, got {text!r}")
    return value
