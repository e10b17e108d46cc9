"""Argument types shared by the subcommands."""
from __future__ import annotations

import argparse
import math


def finite_float(text: str) -> float:
    """argparse ``type=`` for a float option that must be a finite number (``nan`` / ``inf`` are refused in
    one line instead of running with degenerate values)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value
