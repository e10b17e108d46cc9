"""EleutherAI sparsify: one folder per hook point holding ``cfg.json`` + ``sae.safetensors``.

Conventions (sparsify ``sparse_coder.py`` / ``fused_encoder.py``): tensors ``encoder.weight
[num_latents, d_in]`` (an ``nn.Linear``, so the transpose of SAELens' ``W_enc``), ``encoder.bias
[num_latents]``, ``W_dec [num_latents, d_in]``, ``b_dec [d_in]``; the input ALWAYS has ``b_dec``
subtracted; latents are ``TopK_k(relu(encoder(x - b_dec)))``; ``x_hat = sum_i z_i W_dec[i] + b_dec``.
Only TopK exists there: a ReLU SAE is written as TopK with ``k = num_latents`` (identical latents);
JumpReLU / BatchTopK SAEs cannot be expressed and are refused.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.interop.raw import RawSAE, topk_from_relu, with_b_dec_convention
from qwen_sae_jax.interop.tensors import read_json_object, read_safetensors, require_tensors, write_safetensors

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
ENCODER_KEYS = ("encoder.weight", "encoder.bias")


def write_sparsify(raw: RawSAE, out_dir: str | os.PathLike) -> None:
    """Write one SAE into the (existing, empty) hook-point folder ``out_dir``."""
    if raw.architecture in ("jumprelu", "batchtopk"):
        raise UserError(f"sparsify has no {raw.architecture} SAEs (TopK only); export this SAE with "
                        "--format saelens instead")
    raw = with_b_dec_convention(topk_from_relu(raw), True)
    assert raw.k is not None  # topk_from_relu gives a TopK SAE
    out_dir = Path(out_dir)
    dec_norms = np.linalg.norm(raw.W_dec.astype(np.float64), axis=1)
    cfg = {
        "activation": "topk",
        "expansion_factor": max(1, raw.d_sae // raw.d_in),
        "normalize_decoder": bool(np.allclose(dec_norms, 1.0, atol=1e-4)),
        "num_latents": raw.d_sae,
        "k": int(raw.k),
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": raw.d_in,
        # ignored by sparsify (it drops unknown fields), read back by qwen_sae_jax
        "qwen_sae_jax": {"hook_name": raw.hook_name, "model_name": raw.model_name, "cfg": raw.native_cfg},
    }
    write_safetensors(out_dir / WEIGHTS_FILE, {
        "encoder.weight": raw.W_enc.T, "encoder.bias": raw.b_enc, "W_dec": raw.W_dec, "b_dec": raw.b_dec})
    (out_dir / CFG_FILE).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def read_sparsify(path: str | os.PathLike) -> RawSAE:
    """Read one sparsify hook-point folder; the folder name is taken as the hook name if the config
    does not record one."""
    path = Path(path)
    where = f"sparsify folder {path}"
    cfg = read_json_object(path / CFG_FILE, where)
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise UserError(f"{where}: unsupported sparsify activation {activation!r}; supported: ['topk']")
    for flag in ("transcode", "skip_connection", "signed", "multi_topk_only"):
        if cfg.get(flag):
            raise UserError(f"{where}: sparse coders with {flag}=true are not supported")
    try:
        d_in = int(cfg["d_in"])
        d_sae = int(cfg.get("num_latents") or d_in * int(cfg.get("expansion_factor", 32)))
        k = int(cfg.get("k", 32))
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{where}: {CFG_FILE} needs integer 'd_in', 'num_latents' (or "
                        "'expansion_factor') and 'k'") from None
    tensors, _ = read_safetensors(path / WEIGHTS_FILE)
    if "W_skip" in tensors:
        raise UserError(f"{where}: sparse coders with a skip connection (W_skip) are not supported")
    shapes = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,), "W_dec": (d_sae, d_in),
              "b_dec": (d_in,)}
    require_tensors(tensors, shapes, where)
    extra = sorted(set(tensors) - set(shapes))
    if extra:
        raise UserError(f"{where}: unexpected tensor(s) {extra}")
    ours = cfg.get("qwen_sae_jax") or {}
    raw = RawSAE(
        architecture="topk", W_enc=np.ascontiguousarray(tensors["encoder.weight"].T),
        b_enc=tensors["encoder.bias"], W_dec=tensors["W_dec"], b_dec=tensors["b_dec"],
        apply_b_dec_to_input=True, k=k, hook_name=ours.get("hook_name") or path.name,
        model_name=ours.get("model_name"), native_cfg=ours.get("cfg"),
    )
    if k == d_sae:
        raw = raw.replace(architecture="relu", k=None)
    return raw
