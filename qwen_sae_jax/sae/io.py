"""Native SAE files: a folder holding ``cfg.json`` (the `SAEConfig` fields plus ``format_version``) and
``sae.safetensors`` (tensors named as the `SAE` fields, SAELens layouts, the config's dtype; act_scale
float32). Writes are atomic: everything goes to a temporary sibling folder that is renamed into place, so
a reader never sees half an SAE. An existing folder is replaced only with ``overwrite=True``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.atomic import atomic_directory
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.sae.config import SAEConfig
from qwen_sae_jax.sae.core import PARAM_NAMES, SAE

CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
FORMAT_VERSION = 1


def expected_shapes(cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
    return {
        "W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_in),
        "b_dec": (cfg.d_in,), "threshold": (cfg.d_sae,), "act_scale": (),
    }


def save_sae(sae: SAE, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``sae`` to the folder ``path`` (created; its parent must exist or is created). Returns the path."""
    from qwen_sae_jax.safetensors_io import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass overwrite=True to replace it")
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} exists and is not a folder; refusing to replace it")
    for name in PARAM_NAMES:
        leaf = getattr(sae, name)
        if not bool(jnp.all(jnp.isfinite(leaf))):
            raise UserError(f"refusing to save an SAE whose {name} contains NaN or inf")
    with atomic_directory(path, force=True) as tmp:
        tensors = {name: np.asarray(getattr(sae, name)) for name in PARAM_NAMES}
        save_file(tensors, tmp / WEIGHTS_FILE,
                  metadata={"format": "qwen_sae_jax", "format_version": str(FORMAT_VERSION)})
        meta = {"format_version": FORMAT_VERSION, **sae.cfg.to_dict()}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        _fsync_dir_files(tmp)
    return path


def load_native_sae(path: str | os.PathLike) -> SAE:
    """Read a native SAE folder written by `save_sae`."""
    from safetensors.flax import load_file

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"no SAE folder at {path} (expected a folder with {CONFIG_FILE} and {WEIGHTS_FILE})")
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (path / name).is_file()]
    if missing:
        raise UserError(f"{path} is not a native SAE folder: missing {', '.join(missing)}")
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path / CONFIG_FILE} is not valid JSON: {err}") from None
    version = meta.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise UserError(f"{path}: unsupported SAE format_version {version!r} (this version reads {FORMAT_VERSION})")
    cfg = SAEConfig.from_dict(meta)
    tensors = load_file(str(path / WEIGHTS_FILE))
    shapes = expected_shapes(cfg)
    missing = [name for name in PARAM_NAMES if name not in tensors]
    if missing:
        raise UserError(f"{path / WEIGHTS_FILE} lacks tensor(s) {', '.join(missing)}")
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise UserError(f"{path / WEIGHTS_FILE}: {name} has shape {tuple(tensors[name].shape)}, "
                            f"cfg.json implies {shape}")
    dtype = jnp.dtype(cfg.dtype)
    params = {name: jnp.asarray(tensors[name], jnp.float32 if name == "act_scale" else dtype) for name in PARAM_NAMES}
    return SAE(cfg=cfg, **params)


def _fsync_dir_files(folder: Path) -> None:
    for child in folder.iterdir():
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())

