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


_BYTE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def byte_size(text: str) -> int:
    """argparse ``type=`` for a memory size: a number with a unit, e.g. ``16GB``, ``80GiB``, ``512MB``
    (decimal GB = 1e9 bytes, binary GiB = 2**30); a bare number is bytes."""
    cleaned = text.strip().lower().replace(" ", "")
    number = cleaned.rstrip("kmgtib")
    unit = cleaned[len(number):] or "b"
    try:
        value = float(number) * _BYTE_UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(
            f"expected a size like 16GB, 80GiB or 512MB, got {text!r} (units: {', '.join(_BYTE_UNITS)})") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return int(value)
