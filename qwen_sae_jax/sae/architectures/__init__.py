"""One module per SAE architecture, each registering itself (`qwen_sae_jax.sae.registry.register`) with:

    encode(sae, x_in, implementation) -> z [B, d_sae]        dense latents of normalised inputs x_in [B, d_in]
    loss(sae, x_in, valid, dead_mask, implementation) -> (loss, LossTerms)
    encode_sparse(sae, x_in, implementation) -> (acts [B, k], idx [B, k])   (optional: topk)

``x_in`` is already multiplied by ``act_scale`` and has its non-finite rows zeroed (``valid`` [B] marks
the others). Shared arithmetic lives in `common.py` and `auxk.py`; the loss pieces (`LossTerms`,
reconstruction terms) in `qwen_sae_jax.sae.loss_terms`; their conventions in `qwen_sae_jax.sae.losses`.
An architecture never imports `core` or `losses` at run time (they import the registry, not it).

Importing this package registers every architecture; `qwen_sae_jax.sae`'s ``__init__`` does so. A new
architecture is a new module here calling `register`, plus its import below and its name in
`qwen_sae_jax.sae.config.ARCHITECTURES` (``tests/sae/test_registry.py`` checks that the two agree).
"""
from qwen_sae_jax.sae.architectures import batchtopk, jumprelu, relu, topk

__all__ = ["batchtopk", "jumprelu", "relu", "topk"]
