"""Errors meant for the user: the CLI prints them as one line, without a traceback."""
from __future__ import annotations

import difflib
from typing import Iterable


class UserError(ValueError):
    """Bad input from the user (config, path, hook name, ...). The message says what is wrong
    and what is valid."""


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The closest valid name to ``name`` (for 'did you mean ...?' hints), or None."""
    matches = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    best = closest(name, valid)
    return f" (did you mean {best!r}?)" if best else ""
