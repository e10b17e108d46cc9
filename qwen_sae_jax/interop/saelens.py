"""SAELens v6 folders: ``cfg.json`` + ``sae_weights.safetensors`` (+ optional ``sparsity.safetensors``).

Conventions (SAELens ``sae_lens/saes/*.py``, v6): ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``;
the input has ``b_dec`` subtracted iff ``cfg.apply_b_dec_to_input``; architectures

    standard  z = relu(pre)
    topk      z = relu(TopK_k(pre))       (same dense z as TopK_k(relu(pre)))
    jumprelu  z = relu(pre) * (pre > relu(threshold))

and ``x_hat = z @ W_dec + b_dec``. BatchTopK SAEs are written as ``jumprelu`` with their inference
threshold, as SAELens itself saves them. ``hook_name`` lives in ``metadata`` in TransformerLens naming.
Only ``normalize_activations == "none"`` is written (input scaling is folded into the weights).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.interop.hook_names import from_transformer_lens, to_transformer_lens
from qwen_sae_jax.interop.raw import RawSAE, fold_input_scale
from qwen_sae_jax.interop.tensors import read_json_object, read_safetensors, require_tensors, write_safetensors

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
# the cfg.json schema version we write; SAELens treats configs without a >= 6 version as pre-6.0
SAELENS_SCHEMA_VERSION = "6.0.0"
_ARCH_OUT = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}
_ARCH_IN = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}


def is_saelens_dir(path: Path) -> bool:
    return (path / CFG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def write_saelens(raw: RawSAE, out_dir: str | os.PathLike, *, log_feature_density: np.ndarray | None = None,
                  context_size: int | None = None) -> None:
    """Write one SAE into the (existing, empty) folder ``out_dir``.

    ``log_feature_density`` [d_sae]: log10 firing frequency, written as ``sparsity.safetensors``.
    """
    out_dir = Path(out_dir)
    architecture = _ARCH_OUT[raw.architecture]
    cfg: dict[str, Any] = {
        "architecture": architecture,
        "d_in": raw.d_in,
        "d_sae": raw.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": bool(raw.apply_b_dec_to_input),
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    if architecture == "topk":
        cfg["k"] = int(raw.k)  # type: ignore[arg-type]  # a topk / batchtopk RawSAE has k
        cfg["rescale_acts_by_decoder_norm"] = False
    cfg["metadata"] = {
        "sae_lens_version": SAELENS_SCHEMA_VERSION,
        "model_name": raw.model_name,
        "hook_name": to_transformer_lens(raw.hook_name),
        "hook_head_index": None,
        "context_size": context_size,
        "prepend_bos": False,
        "exported_by": "qwen_sae_jax",
        "original_architecture": raw.architecture,
        "qwen_sae_jax_cfg": raw.native_cfg,
    }
    if raw.architecture == "batchtopk":
        cfg["metadata"]["k"] = int(raw.k)  # type: ignore[arg-type]  # training-time k, so a re-import is a BatchTopK SAE again
    tensors = {"W_enc": raw.W_enc, "W_dec": raw.W_dec, "b_enc": raw.b_enc, "b_dec": raw.b_dec}
    if architecture == "jumprelu":
        assert raw.threshold is not None  # a jumprelu RawSAE has its threshold
        tensors["threshold"] = raw.threshold
    write_safetensors(out_dir / WEIGHTS_FILE, tensors)
    if log_feature_density is not None:
        density = np.asarray(log_feature_density, dtype=np.float32)
        if density.shape != (raw.d_sae,):
            raise UserError(f"log feature density has shape {density.shape}, expected ({raw.d_sae},)")
        write_safetensors(out_dir / SPARSITY_FILE, {"sparsity": density})
    (out_dir / CFG_FILE).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _meta(cfg: dict, key: str):
    """A field that v6 keeps in ``metadata`` and older versions at the top level."""
    meta = cfg.get("metadata") or {}
    if key in meta and meta[key] is not None:
        return meta[key]
    return cfg.get(key)


def read_saelens(path: str | os.PathLike, *, norm_scaling_factor: float | None = None) -> RawSAE:
    """Read a SAELens folder. ``norm_scaling_factor``: the dataset scaling factor of an SAE saved with
    ``normalize_activations="expected_average_only_in"`` (SAELens keeps it outside the folder); it is
    folded into the weights like SAELens' ``fold_activation_norm_scaling_factor``."""
    path = Path(path)
    where = f"SAELens folder {path}"
    cfg = read_json_object(path / CFG_FILE, where)
    arch_in = cfg.get("architecture", "standard")
    if arch_in not in _ARCH_IN:
        raise UserError(f"{where}: unsupported SAELens architecture {arch_in!r}; supported: "
                        f"{sorted(_ARCH_IN)}")
    try:
        d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{where}: {CFG_FILE} needs integer 'd_in' and 'd_sae'") from None
    if cfg.get("reshape_activations", "none") != "none" or _meta(cfg, "hook_head_index") is not None:
        raise UserError(f"{where}: per-head (hook_z / hook_head_index) SAEs are not supported")
    norm = cfg.get("normalize_activations", "none")
    if norm is False or norm is None:
        norm = "none"
    if norm is True:
        norm = "expected_average_only_in"
    if norm not in ("none", "expected_average_only_in"):
        raise UserError(f"{where}: normalize_activations={norm!r} (a per-token normalisation) cannot be "
                        "folded into the weights; supported: 'none', 'expected_average_only_in'")
    if norm == "expected_average_only_in" and norm_scaling_factor is None:
        raise UserError(f"{where}: normalize_activations='expected_average_only_in' needs the dataset "
                        "scaling factor, which SAELens keeps outside the folder; pass norm_scaling_factor=")

    tensors, _ = read_safetensors(path / WEIGHTS_FILE)
    if "log_threshold" in tensors and "threshold" not in tensors:   # pre-6 JumpReLU checkpoints
        tensors["threshold"] = np.exp(tensors.pop("log_threshold"))
    if "scaling_factor" in tensors:
        if not np.allclose(tensors["scaling_factor"], 1.0):
            raise UserError(f"{where}: a fine-tuning scaling_factor other than 1 is not supported")
        tensors.pop("scaling_factor")
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    if arch_in == "jumprelu":
        shapes["threshold"] = (d_sae,)
    require_tensors(tensors, shapes, where)
    extra = sorted(set(tensors) - set(shapes))
    if extra:
        raise UserError(f"{where}: unexpected tensor(s) {extra} for architecture {arch_in!r}")

    W_enc, W_dec, b_enc = tensors["W_enc"], tensors["W_dec"], tensors["b_enc"]
    architecture = _ARCH_IN[arch_in]
    k = None
    if arch_in == "topk":
        if "k" not in cfg:
            raise UserError(f"{where}: topk SAE without 'k' in {CFG_FILE}")
        k = int(cfg["k"])
        if cfg.get("rescale_acts_by_decoder_norm", False):
            # SAELens: hidden_pre * |W_dec row| before TopK, acts / |W_dec row| in decode. Folding the norm
            # into the encoder (and out of the decoder) gives exactly the same latents and output.
            norms = np.linalg.norm(W_dec.astype(np.float64), axis=1)           # [d_sae]
            W_enc = (W_enc.astype(np.float64) * norms[None, :]).astype(np.float32)
            b_enc = (b_enc.astype(np.float64) * norms).astype(np.float32)
            W_dec = (W_dec.astype(np.float64) / norms[:, None]).astype(np.float32)
    threshold = None
    if arch_in == "jumprelu":
        # SAELens gates with relu(threshold); as relu() is applied to pre as well, a negative threshold
        # acts exactly like 0, so the tensor is kept as it is
        threshold = tensors["threshold"]
        meta = cfg.get("metadata") or {}
        if meta.get("original_architecture") == "batchtopk" and meta.get("k") is not None:
            architecture, k = "batchtopk", int(meta["k"])
    raw = RawSAE(
        architecture=architecture, W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=tensors["b_dec"],
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)), k=k, threshold=threshold,
        hook_name=from_transformer_lens(_meta(cfg, "hook_name") or _meta(cfg, "hook_point")),
        model_name=_meta(cfg, "model_name"), native_cfg=(cfg.get("metadata") or {}).get("qwen_sae_jax_cfg"),
    )
    if architecture == "topk" and k == d_sae:
        raw = raw.replace(architecture="relu", k=None)
    if norm == "expected_average_only_in":
        raw = fold_input_scale(raw, float(norm_scaling_factor))  # type: ignore[arg-type]  # not None here (checked above)
    return raw


def read_saelens_log_density(path: str | os.PathLike) -> np.ndarray | None:
    """The ``sparsity`` tensor (log10 feature density) of a SAELens folder, or None if it has none."""
    file = Path(path) / SPARSITY_FILE
    if not file.is_file():
        return None
    tensors, _ = read_safetensors(file)
    if "sparsity" not in tensors:
        raise UserError(f"{file}: expected a tensor named 'sparsity', found {sorted(tensors)}")
    return tensors["sparsity"]
