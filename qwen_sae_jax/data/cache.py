"""On-disk activation cache: plain ``.npy`` shards readable without this package.

    CACHE_DIR/
      manifest.json                 {"hooks": [...], "d": D, "dtype": "float32", "shards": [rows, ...],
                                     "rows": total, "model": name, "format": 1}
      <hook_name>/shard_00000.npy   [rows_i, D] array (row r of every hook is the same token)

Read one with ``np.load("CACHE_DIR/layers.1/shard_00000.npy")``. ``bfloat16`` activations are stored as
their raw 16 bits (``uint16``; the manifest says ``"dtype": "bfloat16"``): view them with
``np.load(...).view(ml_dtypes.bfloat16)``. Shards and the manifest are written atomically (temp file +
rename), and the manifest lists only complete shards, so an interrupted writer leaves a valid cache.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import ml_dtypes
import numpy as np

from qwen_sae_jax.errors import UserError

FORMAT = 1
_STORED = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}


def _atomic_write_bytes(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _dtype_name(dtype) -> str:
    name = np.dtype(dtype).name
    if name not in _STORED:
        raise UserError(f"activation cache: dtype {name} is not supported; valid: {', '.join(_STORED)}")
    return name


class CacheWriter:
    """Appends rows [H, n, D] per hook; a shard is written when ``shard_rows`` rows are pending."""

    def __init__(self, directory: str | os.PathLike, hooks: Sequence[str], d: int, dtype, shard_rows: int,
                 model: str = ""):
        self.dir = Path(directory)
        self.hooks, self.d, self.shard_rows = list(hooks), int(d), int(shard_rows)
        self.dtype = _dtype_name(dtype)
        manifest = self.dir / "manifest.json"
        if manifest.exists():
            old = json.loads(manifest.read_text())
            if old.get("hooks") != self.hooks or old.get("d") != self.d or old.get("dtype") != self.dtype:
                raise UserError(f"activation cache {str(self.dir)!r} holds other hooks/width/dtype "
                                f"({old.get('hooks')}, d={old.get('d')}, {old.get('dtype')}); use another cache.dir")
            self.shards = list(old["shards"])
        else:
            self.shards = []
        self.model = model
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    @property
    def rows(self) -> int:
        """Rows on disk (complete shards)."""
        return int(sum(self.shards))

    def truncate(self, rows: int) -> None:
        """Forget every shard after the first ``rows`` rows (used when resuming: rows must end on a shard)."""
        kept, total = [], 0
        for n in self.shards:
            if total + n > rows:
                break
            kept.append(n)
            total += n
        if total != rows:
            raise UserError(f"activation cache {str(self.dir)!r} has no shard boundary at row {rows}")
        for i in range(len(kept), len(self.shards)):
            for hook in self.hooks:
                (self.dir / hook / f"shard_{i:05d}.npy").unlink(missing_ok=True)
        self.shards = kept
        self._pending, self._pending_rows = [], 0
        self._write_manifest()

    def append(self, rows: np.ndarray) -> None:
        """rows [H, n, D] in the cache's dtype order of hooks."""
        if rows.shape[1]:
            self._pending.append(np.asarray(rows))
            self._pending_rows += rows.shape[1]
        while self._pending_rows >= self.shard_rows:
            self._write_shard(self.shard_rows)

    def flush(self) -> None:
        """Write every pending row (a short shard), e.g. before a checkpoint."""
        if self._pending_rows:
            self._write_shard(self._pending_rows)

    def _write_shard(self, n: int) -> None:
        data = np.concatenate(self._pending, axis=1)
        shard, rest = data[:, :n], data[:, n:]
        self._pending, self._pending_rows = ([rest] if rest.shape[1] else []), rest.shape[1]
        index = len(self.shards)
        for h, hook in enumerate(self.hooks):
            (self.dir / hook).mkdir(parents=True, exist_ok=True)
            arr = np.ascontiguousarray(shard[h])
            if self.dtype == "bfloat16":
                arr = arr.view(np.uint16)
            _atomic_write_bytes(self.dir / hook / f"shard_{index:05d}.npy", lambda fh, a=arr: np.save(fh, a))
        self.shards.append(int(n))
        self._write_manifest()

    def _write_manifest(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        body = {"format": FORMAT, "hooks": self.hooks, "d": self.d, "dtype": self.dtype, "shards": self.shards,
                "rows": self.rows, "model": self.model}
        _atomic_write_bytes(self.dir / "manifest.json", lambda fh: fh.write(json.dumps(body, indent=1).encode()))


class CacheReader:
    """Reads rows [H, n, D] in order, wrapping around at the end (epochs); state = the next row."""

    def __init__(self, directory: str | os.PathLike, hooks: Sequence[str]):
        self.dir = Path(directory)
        manifest = self.dir / "manifest.json"
        if not manifest.exists():
            raise UserError(f"activation cache {str(self.dir)!r} has no manifest.json (write it with cache.mode=write)")
        meta = json.loads(manifest.read_text())
        missing = [h for h in hooks if h not in meta["hooks"]]
        if missing:
            raise UserError(f"activation cache {str(self.dir)!r} lacks hook(s) {', '.join(missing)}; it holds "
                            f"{', '.join(meta['hooks'])}")
        if not meta["rows"]:
            raise UserError(f"activation cache {str(self.dir)!r} is empty")
        self.hooks, self.d, self.dtype = list(hooks), int(meta["d"]), meta["dtype"]
        self.rows = int(meta["rows"])
        self.model = meta.get("model", "")
        self._bounds = np.cumsum([0] + list(meta["shards"]))
        self._arrays: dict[tuple[str, int], np.ndarray] = {}
        self.position = 0

    @property
    def numpy_dtype(self):
        return ml_dtypes.bfloat16 if self.dtype == "bfloat16" else np.dtype(self.dtype)

    def _shard(self, hook: str, index: int) -> np.ndarray:
        key = (hook, index)
        if key not in self._arrays:
            arr = np.load(self.dir / hook / f"shard_{index:05d}.npy", mmap_mode="r")
            self._arrays[key] = arr.view(ml_dtypes.bfloat16) if self.dtype == "bfloat16" else arr
        return self._arrays[key]

    def read(self, start: int, n: int, row_slice: slice = slice(None)) -> np.ndarray:
        """Rows [start, start + n) (modulo the cache size) of every hook: [H, n, D][:, row_slice]."""
        index = np.arange(start, start + n)[row_slice] % self.rows
        out = np.empty((len(self.hooks), len(index), self.d), self.numpy_dtype)
        shard_of = np.searchsorted(self._bounds, index, side="right") - 1
        for s in np.unique(shard_of):
            sel = shard_of == s
            local = index[sel] - self._bounds[s]
            for h, hook in enumerate(self.hooks):
                out[h, sel] = self._shard(hook, int(s))[local]
        return out

    def get_state(self) -> dict:
        return {"position": int(self.position)}

    def set_state(self, state: dict) -> None:
        self.position = int(state["position"])
