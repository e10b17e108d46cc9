"""AuxK (Gao et al. 2024), shared by topk and batchtopk: reconstruct the main model's residual
``x - x_hat`` from each token's top-k_aux *dead* latents (bias-free decode), weighted by
min(num_dead / k_aux, 1) and ``aux_coefficient``. Skipped at run time (lax.cond) when nothing is dead.

The selection reuses the dense matrix ``x_enc @ W_enc`` when the XLA path built it (with the bias of
live latents set to -inf); on the Pallas path it runs
the fused kernel again with the bias of live latents set to -inf, so no [B, d_sae] matrix is written.
Gradients are sparse (`sparse_encoder_acts`, `sparse_decode`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from qwen_sae_jax.sae.loss_terms import auxk_loss
from qwen_sae_jax.sae.select import select_topk, top_k_of
from qwen_sae_jax.sae.sparse import sparse_decode, sparse_encoder_acts

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE


def auxk_term(
    sae: "SAE",
    x_in: jax.Array,  # [B, d_in] normalised input
    x_enc: jax.Array,  # [B, d_in] encoder input (x_in - b_dec?)
    x_hat: jax.Array,  # [B, d_in] main reconstruction
    valid: jax.Array,  # [B]
    dead_mask: jax.Array | None,  # [d_sae] bool
    pre: jax.Array | None,  # [B, d_sae] x_enc @ W_enc (no bias) if already computed
    implementation: str,
) -> jax.Array:
    """The weighted AuxK term (0 when dead_mask is None or nothing is dead)."""
    cfg = sae.cfg
    if dead_mask is None or cfg.aux_coefficient == 0:
        return jnp.zeros((), jnp.float32)
    k_aux = cfg.resolved_k_aux

    def compute(_):
        b_masked = jnp.where(dead_mask, sae.b_enc, -jnp.inf)  # [d_sae]: live latents excluded
        if pre is not None:  # x_enc @ W_enc without the bias, from the main selection
            vals, idx = top_k_of(lax.stop_gradient(pre), lax.stop_gradient(b_masked).astype(pre.dtype), k_aux,
                                 implementation)
            vals = jnp.maximum(vals, 0)
        else:
            vals, idx, _ = select_topk(x_enc, sae.W_enc, b_masked, k_aux, implementation)
        keep = jnp.take(dead_mask, idx) & valid[:, None]  # [B, k_aux]
        acts = jnp.where(keep, vals, 0).astype(sae.W_enc.dtype)
        acts = sparse_encoder_acts(acts, idx, x_in, sae.W_enc, sae.b_enc, sae.b_dec, cfg.apply_b_dec_to_input)
        e_hat = sparse_decode(acts, idx, sae.W_dec)  # [B, d_in]
        return cfg.aux_coefficient * auxk_loss(e_hat, x_in - x_hat, valid, dead_mask, k_aux)

    return lax.cond(jnp.any(dead_mask), compute, lambda _: jnp.zeros((), jnp.float32), None)
