"""Argument types shared by the subcommands."""
from __future__ import annotations

import argparse
import math
import sys
import time


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


def int_at_least(minimum: int):
    """argparse ``type=`` factory for an integer option with a lower bound: ``type=int_at_least(1)`` refuses
    ``abc``, ``1.5`` and ``0`` in one line that says what is valid."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def open_fraction(text: str) -> float:
    """argparse ``type=`` for a share strictly between 0 and 1 (e.g. a held-out fraction)."""
    value = finite_float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text!r}")
    return value


def float32_float(text: str) -> float:
    """argparse ``type=`` for a finite float that is applied to float32 activations: beyond float32's range
    (about 3.4e38) it would become inf inside the model, so it is refused like ``inf``."""
    value = finite_float(text)
    if abs(value) > 3.4e38:
        raise argparse.ArgumentTypeError(f"expected a finite number within float32's range (|x| <= 3.4e38), "
                                         f"got {text!r}")
    return value


def check_output_file(path, option: str) -> None:
    """Refuse, before any work, an output file path that cannot be written: an existing folder, or a parent
    that is an existing file. A missing parent folder is fine (it is created when the file is written)."""
    from pathlib import Path

    from qwen_sae_jax.errors import UserError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file path")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(f"{option} {path}: {parent} is a file, not a folder")


def check_output_folder(path, option: str) -> None:
    """Refuse, before any work, an output folder path that is an existing file (or lies under one)."""
    from pathlib import Path

    from qwen_sae_jax.errors import UserError

    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{option} {path}: {blocker} is a file, not a folder")


def add_run_arguments(parser: argparse.ArgumentParser, config_help: str, overrides_example: str) -> None:
    """The arguments every long-running config command shares (``train``, ``sft``): CONFIG, dotted overrides,
    ``--resume`` and the multi-host options (`distributed_overrides` turns those into config keys)."""
    parser.add_argument("config", help=config_help)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"dotted overrides applied after the file, e.g. {overrides_example}")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint in run_dir (starts fresh if there is none)")
    parser.add_argument("--coordinator", metavar="HOST:PORT",
                        help="multi-host: address of process 0 (same as distributed.coordinator)")
    parser.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    parser.add_argument("--process-id", type=int, help="multi-host: index of this process")


def distributed_overrides(args: argparse.Namespace | None) -> list[str]:
    """``distributed.*=value`` overrides for the multi-host options given on the command line."""
    if args is None:
        return []
    given = (("coordinator", args.coordinator), ("num_processes", args.num_processes),
             ("process_id", args.process_id))
    return [f"distributed.{key}={value}" for key, value in given if value is not None]


def progress(total: int, desc: str, unit: str, line_unit: str = ""):
    """``(update(done, total), close())`` for a command's long loop: a tqdm bar with ETA (``unit`` per step) on a
    terminal, else a line ``DESC done/total LINE_UNIT (pct) | elapsed | ETA`` at the first step and every 10%."""
    if sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, file=sys.stderr)

        def update(done: int, _total: int) -> None:
            bar.update(done - bar.n)
        return update, bar.close
    start, shown = time.time(), [-1]
    counted = f" {line_unit}" if line_unit else ""

    def update_lines(done: int, _total: int) -> None:
        if done * 10 // total > shown[0] or done == total:
            shown[0] = done * 10 // total
            elapsed = time.time() - start
            eta = elapsed / done * (total - done)
            print(f"{desc} {done}/{total}{counted} ({100 * done / total:.0f}%) | {elapsed:.0f}s elapsed | "
                  f"ETA {int(eta) // 60}m{int(eta) % 60:02d}s", file=sys.stderr, flush=True)
    return update_lines, lambda: None
