"""Atomic directory output: write everything into a temporary sibling folder, then rename it into place.

A reader never sees a half-written export: either the old destination (or nothing) is there, or the
complete new one. An existing destination is refused unless ``force=True``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from qwen_sae_jax.errors import UserError


def check_destination(dst: str | os.PathLike, force: bool) -> Path:
    """Raise a UserError if ``dst`` exists and ``force`` is False; return it as a Path."""
    dst = Path(dst)
    if dst.exists() and not force:
        raise UserError(f"{dst} already exists; pass --force (force=True) to overwrite it")
    if dst.exists() and not dst.is_dir():
        raise UserError(f"{dst} exists and is not a directory; exports are written as directories")
    return dst


@contextlib.contextmanager
def atomic_directory(dst: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``dst``; on success rename it to ``dst``.

    On any exception the temporary directory is removed and ``dst`` is left untouched.
    With ``force`` an existing ``dst`` is replaced (moved aside, the new one renamed in, the old one deleted).
    """
    dst = check_destination(dst, force).absolute()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    # mkdtemp makes the folder 0700; give it the permissions a normal mkdir would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(dst, old)
        os.rename(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, dst)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path next to ``path`` (same suffix, so writers that go by the extension, such as
    ``savefig`` or ``np.save``, keep working); on success rename it to ``path``, replacing a previous file.

    On any exception the temporary file is removed and ``path`` is left as it was. Missing parent folders are
    created."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
