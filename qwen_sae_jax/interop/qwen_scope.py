"""Qwen-Scope checkpoints: one ``layer{N}.sae.pt`` per layer, a plain dict of four tensors.

Layout of the released Qwen-Scope SAEs (model cards of ``Qwen/SAE-Res-Qwen3*``): ``W_enc [d_sae, d_model]``,
``W_dec [d_model, d_sae]`` (both the transpose of SAELens'), ``b_enc [d_sae]``, ``b_dec [d_model]``; a TopK
SAE on the residual stream after decoder layer N (our ``layers.N``). ``b_dec`` is NEVER subtracted from the
input: ``z = TopK_k(relu(x @ W_enc.T + b_enc))``, ``x_hat = z @ W_dec.T + b_dec``. ``k`` is not stored in the
checkpoint (the release names it, e.g. ``...-L0_50``), so we also write ``qwen_scope.json`` next to the
files, and a reader takes ``k`` from: the argument, that file, the README's "Top-K" row, the folder name.
``.pt`` files are read only with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.interop.raw import RawSAE, topk_from_relu, with_b_dec_convention
from qwen_sae_jax.interop.tensors import load_pt_tensor_dict, require_tensors, save_pt_tensor_dict

SIDECAR_FILE = "qwen_scope.json"
LAYER_FILE = re.compile(r"^layer(\d+)\.sae\.pt$")
_RESID = re.compile(r"^layers\.(\d+)$")


def layer_file(layer: int) -> str:
    return f"layer{int(layer)}.sae.pt"


def layer_of(file: Path) -> int:
    """The N of ``layer{N}.sae.pt``."""
    m = LAYER_FILE.match(Path(file).name)
    if not m:
        raise UserError(f"{file}: Qwen-Scope files are named layer{{N}}.sae.pt")
    return int(m.group(1))


def layer_files(folder: Path) -> dict[int, Path]:
    """``{layer: path}`` of the ``layer{N}.sae.pt`` files in ``folder``."""
    found: dict[int, Path] = {}
    if not folder.is_dir():
        return found
    for p in folder.iterdir():
        m = LAYER_FILE.match(p.name)
        if m and p.is_file():
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def write_qwen_scope(raws: Sequence[RawSAE], out_dir: str | os.PathLike) -> None:
    """Write residual-stream SAEs (hook ``layers.N``, one per layer) into the existing folder ``out_dir``."""
    out_dir = Path(out_dir)
    sidecar: dict[str, Any] = {"format": "qwen-scope", "model_name": None, "layers": {}}
    for raw in raws:
        m = _RESID.match(raw.hook_name or "")
        if not m:
            raise UserError(f"Qwen-Scope files hold residual-stream SAEs (hook 'layers.N'); the SAE for "
                            f"{raw.hook_name!r} cannot be named layer{{N}}.sae.pt: use --format saelens "
                            "or sparsify")
        if raw.architecture in ("jumprelu", "batchtopk"):
            raise UserError(f"Qwen-Scope files hold TopK SAEs; a {raw.architecture} SAE cannot be expressed "
                            "(no threshold tensor): use --format saelens")
        layer = int(m.group(1))
        if str(layer) in sidecar["layers"]:
            raise UserError(f"two SAEs for layer {layer}; a Qwen-Scope folder holds one per layer")
        raw = with_b_dec_convention(topk_from_relu(raw), False)
        save_pt_tensor_dict(out_dir / layer_file(layer), {
            "W_enc": raw.W_enc.T, "W_dec": raw.W_dec.T, "b_enc": raw.b_enc, "b_dec": raw.b_dec})
        assert raw.k is not None  # topk_from_relu gives a TopK SAE
        sidecar["layers"][str(layer)] = {"k": int(raw.k), "hook_name": raw.hook_name,
                                         "d_model": raw.d_in, "d_sae": raw.d_sae, "cfg": raw.native_cfg}
        sidecar["model_name"] = sidecar["model_name"] or raw.model_name
    (out_dir / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")


def k_from_folder(folder: Path, layer: int) -> tuple[int | None, str | None, dict | None]:
    """(k, model_name, native cfg) from our sidecar, the release README, or the release folder name."""
    sidecar = folder / SIDECAR_FILE
    if sidecar.is_file():
        try:
            info = json.loads(sidecar.read_text())
            entry = info["layers"][str(layer)]
            return int(entry["k"]), info.get("model_name"), entry.get("cfg")
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise UserError(f"{sidecar} is unreadable or has no entry for layer {layer}") from None
    model_name = None
    readme = folder / "README.md"
    if readme.is_file():
        text = readme.read_text(errors="replace")
        m = re.search(r"^base_model:\s*(\S+)\s*$", text, re.M)
        model_name = m.group(1) if m else None
        m = re.search(r"Top-?K\s*\|?\s*(\d+)", text, re.I)
        if m:
            return int(m.group(1)), model_name, None
    m = re.search(r"L0[_-](\d+)", folder.resolve().name)
    if m:
        return int(m.group(1)), model_name, None
    return None, model_name, None


def read_qwen_scope(path: str | os.PathLike, *, layer: int | None = None, k: int | None = None) -> RawSAE:
    """Read ``layer{N}.sae.pt`` (``path`` is the file, or the folder plus ``layer=N``)."""
    path = Path(path)
    if path.is_dir():
        files = layer_files(path)
        if layer is None:
            if len(files) != 1:
                raise UserError(f"{path} holds Qwen-Scope layers {list(files)}; choose one with layer=N "
                                "(--layer N)")
            layer = next(iter(files))
        if layer not in files:
            raise UserError(f"{path} has no {layer_file(layer)}; layers present: {list(files)}")
        file = files[layer]
    else:
        file = path
        layer = layer_of(file)
    where = f"Qwen-Scope checkpoint {file}"
    found_k, model_name, native_cfg = k_from_folder(file.parent, layer)
    k = k if k is not None else found_k
    if k is None:
        raise UserError(f"{where}: the TopK k is not stored in Qwen-Scope files and was not found in "
                        f"{SIDECAR_FILE}, README.md or the folder name (…-L0_50); pass k= (--k K)")
    tensors = load_pt_tensor_dict(file)
    for key in ("b_enc", "b_dec"):
        if key not in tensors or tensors[key].ndim != 1:
            raise UserError(f"{where}: needs 1-D tensors b_enc and b_dec; found "
                            f"{ {n: tuple(t.shape) for n, t in tensors.items()} }")
    d_sae, d_model = tensors["b_enc"].shape[0], tensors["b_dec"].shape[0]
    shapes = {"W_enc": (d_sae, d_model), "W_dec": (d_model, d_sae), "b_enc": (d_sae,), "b_dec": (d_model,)}
    require_tensors(tensors, shapes, where)
    extra = sorted(set(tensors) - set(shapes))
    if extra:
        raise UserError(f"{where}: unexpected tensor(s) {extra}")
    if not 0 < k <= d_sae:
        raise UserError(f"{where}: k={k} must be in 1..d_sae={d_sae}")
    raw = RawSAE(
        architecture="topk", W_enc=np.ascontiguousarray(tensors["W_enc"].T), b_enc=tensors["b_enc"],
        W_dec=np.ascontiguousarray(tensors["W_dec"].T), b_dec=tensors["b_dec"], apply_b_dec_to_input=False,
        k=int(k), hook_name=f"layers.{layer}", model_name=model_name, native_cfg=native_cfg,
    )
    if k == d_sae:
        raw = raw.replace(architecture="relu", k=None)
    return raw
