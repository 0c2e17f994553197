"""Shared command-line values: what is accepted, and the error for what is not."""

from __future__ import annotations

import argparse

import pytest

from experiments.cli_values import positive_floats, rate_or_auto


def test_positive_floats_keeps_order_and_names_the_flag_on_bad_input() -> None:
    assert positive_floats("1.0, 4,0.5", "--rate") == [1.0, 4.0, 0.5]
    for bad in ("", "1,-2", "x", "nan", "inf"):
        with pytest.raises(ValueError, match="--rate"):
            positive_floats(bad, "--rate")


def test_rate_or_auto_is_none_for_auto_and_refuses_non_positive_rates() -> None:
    assert rate_or_auto("auto") is None and rate_or_auto(" AUTO ") is None
    assert rate_or_auto("17") == 17.0
    for bad in ("0", "-3", "nan", "inf", "fast", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="positive req/s or auto"):
            rate_or_auto(bad)
