"""Reading and writing tensor files (and the JSON configs beside them) with one clear error for every way
they can be wrong.

safetensors files are read with the numpy backend (no torch); every tensor comes back as a float32
numpy array. ``.pt`` files are read only through ``torch.load(weights_only=True)``, which refuses any
pickle that would import or call something (so a malicious file is rejected, never executed);
torch is imported only inside :func:`load_pt_tensor_dict` / :func:`save_pt_tensor_dict`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from qwen_sae_jax.errors import UserError


def read_json_object(path: Path, where: str) -> dict:
    """The JSON object in ``path``; ``where`` names the folder in the error (e.g. "SAELens folder X")."""
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{where}: cannot read {path.name}: {err}") from None
    if not isinstance(value, dict):
        raise UserError(f"{where}: {path.name} is not a JSON object")
    return value


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a safetensors file as float32 numpy arrays, and the file's string metadata."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing tensor file {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: np.asarray(f.get_tensor(key)).astype(np.float32) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise UserError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from None
    return tensors, metadata


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
    from qwen_sae_jax.safetensors_io import save_file  # byte-reproducible (sorted header)

    save_file({k: np.asarray(v, dtype=np.float32, order="C") for k, v in tensors.items()}, path,
              metadata=dict(metadata) if metadata else None)


def require_tensors(tensors: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]],
                    where: str) -> None:
    """Check that every key in ``shapes`` is present with exactly that shape."""
    missing = [k for k in shapes if k not in tensors]
    if missing:
        raise UserError(f"{where}: missing tensor(s) {missing}; found {sorted(tensors)}")
    for key, shape in shapes.items():
        got = tuple(tensors[key].shape)
        if got != tuple(shape):
            raise UserError(f"{where}: tensor {key!r} has shape {got}, expected {tuple(shape)} "
                            f"(from the config / the other tensors)")
    for key in shapes:
        if not np.all(np.isfinite(tensors[key])):
            raise UserError(f"{where}: tensor {key!r} holds NaN or inf values")


def load_pt_tensor_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A ``.pt`` file holding a flat ``{name: tensor}`` dict, as float32 numpy arrays.

    Uses ``torch.load(weights_only=True)``: the restricted unpickler accepts tensors and plain
    containers only, so a pickle that references any other callable is refused before anything runs.
    """
    import pickle

    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a test dependency here
        raise UserError(f"reading {path} needs PyTorch (`pip install torch`); .pt is the only format "
                        "that does") from None
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing checkpoint file {path}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"refused to load {path}: it is not a plain tensor checkpoint and "
                        f"torch.load(weights_only=True) rejected it ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        raise UserError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): "
                        f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: entry {key!r} is a {type(value).__name__}, expected a tensor")
        out[str(key)] = value.detach().to(torch.float32).cpu().numpy()
    return out


def save_pt_tensor_dict(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> None:
    """Write a flat ``{name: float32 tensor}`` dict with ``torch.save`` (needs torch)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        raise UserError("writing .pt files needs PyTorch (`pip install torch`)") from None
    torch.save({k: torch.from_numpy(np.array(v, dtype=np.float32, order="C", copy=True)) for k, v in tensors.items()},
               str(path))
