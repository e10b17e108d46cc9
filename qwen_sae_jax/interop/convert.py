"""`SAE` pytree <-> `RawSAE` (the raw-input, float32 numpy form the format readers and writers use).

``sae_to_raw`` folds ``act_scale`` into the weights (float64 arithmetic, one float32 rounding), so the
exported SAE takes raw activations and gives the same latents. ``raw_to_sae`` returns an SAE with
``act_scale == 1``; when the files recorded our own ``SAEConfig`` (``native_cfg``), its training
settings and dtype come back too.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.interop.raw import RawSAE, fold_input_scale
from qwen_sae_jax.sae import SAE, SAEConfig

# fields of SAEConfig that the tensors / format fix (never taken from native_cfg)
_STRUCTURAL = ("architecture", "d_in", "d_sae", "expansion_factor", "k", "apply_b_dec_to_input",
               "normalize_activations", "hook_name", "model_name")


def sae_to_raw(sae: SAE) -> RawSAE:
    cfg = sae.cfg
    arrays = {name: np.asarray(getattr(sae, name), dtype=np.float32)
              for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
    raw = RawSAE(
        architecture=cfg.architecture, W_enc=arrays["W_enc"], b_enc=arrays["b_enc"], W_dec=arrays["W_dec"],
        b_dec=arrays["b_dec"], apply_b_dec_to_input=cfg.apply_b_dec_to_input, k=cfg.k,
        threshold=arrays["threshold"] if cfg.architecture in ("jumprelu", "batchtopk") else None,
        hook_name=cfg.hook_name or None, model_name=cfg.model_name or None, native_cfg=cfg.to_dict(),
    )
    return fold_input_scale(raw, float(np.asarray(sae.act_scale)))


def raw_to_sae(raw: RawSAE) -> SAE:
    fields = {}
    if raw.native_cfg:
        names = set(SAEConfig.__dataclass_fields__)
        fields = {k: v for k, v in raw.native_cfg.items() if k in names and k not in _STRUCTURAL}
    cfg = SAEConfig(**fields, architecture=raw.architecture, d_in=raw.d_in, d_sae=raw.d_sae, k=raw.k,
                    apply_b_dec_to_input=raw.apply_b_dec_to_input, normalize_activations=False,
                    hook_name=raw.hook_name or "", model_name=raw.model_name or "")
    dtype = jnp.dtype(cfg.dtype)
    threshold = raw.threshold if raw.threshold is not None else np.zeros(raw.d_sae, np.float32)
    try:
        return SAE(W_enc=jnp.asarray(raw.W_enc, dtype), b_enc=jnp.asarray(raw.b_enc, dtype),
                   W_dec=jnp.asarray(raw.W_dec, dtype), b_dec=jnp.asarray(raw.b_dec, dtype),
                   threshold=jnp.asarray(threshold, dtype), act_scale=jnp.ones((), jnp.float32), cfg=cfg)
    except (TypeError, ValueError) as err:  # pragma: no cover - shapes were checked by RawSAE
        raise UserError(f"cannot build an SAE from the loaded tensors: {err}") from None
