"""Minimal lazy safetensors reader/writer on numpy memory maps (bfloat16 included, via ml_dtypes).

The format: 8-byte little-endian header length, a JSON header ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {...}}``, then the raw little-endian bytes. Reading
memory-maps the file, so slicing a tensor reads only the bytes of that slice (used by sharded loading).
"""
from __future__ import annotations

import json
import os
import struct
from typing import Mapping

import ml_dtypes
import numpy as np

from qwen_sae_jax.errors import UserError

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsFile:
    """Lazy view of one ``.safetensors`` file: ``keys()``, ``shape(k)``, ``get(k)`` (a read-only memmap)."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
        except (OSError, struct.error, ValueError) as err:
            raise UserError(f"cannot read safetensors file {path}: {err}") from None
        self.metadata = header.pop("__metadata__", {}) or {}
        self._header = header
        self._data_start = 8 + n
        self._mmap: np.memmap | None = None

    def keys(self):
        return self._header.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._header[key]["shape"])

    def get(self, key: str) -> np.ndarray:
        info = self._header[key]
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise UserError(f"{self.path}: tensor {key} has unsupported dtype {info['dtype']}")
        if self._mmap is None:
            self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
        begin, end = info["data_offsets"]
        raw = self._mmap[self._data_start + begin:self._data_start + end]
        return raw.view(dtype).reshape(info["shape"])


def save_file(tensors: Mapping[str, np.ndarray], path: str | os.PathLike,
              metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` (written to ``path + '.tmp'`` then renamed). Byte-reproducible: tensors
    in name order and the header JSON with sorted keys, so equal inputs give equal files (the ``safetensors``
    package writes metadata in hash-map order, which varies between processes)."""
    path = os.fspath(path)
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    arrays = []
    for name in sorted(tensors):
        arr = tensors[name]
        arr = np.asarray(arr, order="C")   # keeps 0-d arrays 0-d (ascontiguousarray makes them [1])
        if arr.dtype not in _NAMES:
            raise ValueError(f"cannot store dtype {arr.dtype} of {name} in safetensors")
        header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays.append(arr)
    blob = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in arrays:
            f.write(arr.tobytes())
    os.replace(tmp, path)
