"""The SAE core: config, pytree, per-architecture encode/decode/loss, sparse TopK, kernels, native files.

    from qwen_sae_jax.sae import SAEConfig, SAE, init_sae, save_sae, load_native_sae, sae_loss

Importing this package registers the architectures (`architectures` calls `registry.register`), before
`core.SAE` or `losses.sae_loss` can look one up.
"""
from qwen_sae_jax.sae import architectures  # noqa: F401  (registers topk, batchtopk, jumprelu, relu)
from qwen_sae_jax.sae.config import ARCHITECTURES, IMPLEMENTATIONS, SAEConfig
from qwen_sae_jax.sae.core import SAE, SparseLatents, fold_act_scale
from qwen_sae_jax.sae.init import estimate_act_scale, geometric_median, init_sae, init_sae_from_sample, shrunk_median
from qwen_sae_jax.sae.io import load_native_sae, save_sae
from qwen_sae_jax.sae.loss_terms import LossTerms
from qwen_sae_jax.sae.losses import sae_loss
from qwen_sae_jax.sae.training import (
    after_update,
    before_update,
    dead_mask,
    init_tokens_since_fired,
    normalize_decoder,
    project_decoder_grads,
    trainable_mask,
    update_batchtopk_threshold,
    update_tokens_since_fired,
)

__all__ = [
    "ARCHITECTURES", "IMPLEMENTATIONS", "SAEConfig", "SAE", "SparseLatents", "fold_act_scale", "init_sae",
    "init_sae_from_sample",
    "geometric_median",
    "shrunk_median",
    "estimate_act_scale", "save_sae", "load_native_sae", "LossTerms", "sae_loss", "after_update", "before_update",
    "dead_mask", "init_tokens_since_fired", "normalize_decoder", "project_decoder_grads", "trainable_mask",
    "update_batchtopk_threshold", "update_tokens_since_fired",
]
