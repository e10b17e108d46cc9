"""ReLU SAE with an L1 penalty weighted by decoder row norms (Anthropic's April 2024 update):
``z = relu(pre)``, loss = mse + l1_coefficient * mean_b sum_j z_j * ||W_dec_j||."""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from qwen_sae_jax.sae.architectures.common import decode_dense, decoder_row_norms, fired_and_l0, pre_activations
from qwen_sae_jax.sae.loss_terms import LossTerms, min_nonzero, reconstruction_terms
from qwen_sae_jax.sae.registry import Architecture, register

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE


def encode(sae: "SAE", x_in: jax.Array, implementation: str = "auto") -> jax.Array:
    """Dense latents ``relu(pre)`` [B, d_sae]."""
    del implementation
    return jnp.maximum(pre_activations(sae, x_in), 0)


def loss(sae: "SAE", x_in, valid, dead_mask, implementation: str = "auto") -> tuple[jax.Array, LossTerms]:
    """mse + the decoder-norm-weighted L1 penalty (sparsity); ``dead_mask`` is unused."""
    del implementation, dead_mask
    x_in = x_in.astype(sae.W_enc.dtype)
    w = valid.astype(jnp.float32)
    z = jnp.maximum(pre_activations(sae, x_in), 0) * valid[:, None].astype(sae.W_enc.dtype)  # [B, d_sae]
    x_hat = decode_dense(sae, z)
    mse, fvu = reconstruction_terms(x_in, x_hat, valid)
    weighted_l1 = jnp.sum(z.astype(jnp.float32) * decoder_row_norms(sae), axis=-1)  # [B]
    sparsity = sae.cfg.l1_coefficient * jnp.sum(w * weighted_l1) / jnp.maximum(jnp.sum(w), 1.0)
    fired, l0 = fired_and_l0(z, valid)
    zero = jnp.zeros((), jnp.float32)
    terms = LossTerms(mse=mse, fvu=fvu, aux=zero, sparsity=sparsity, l0=l0, fired=fired,
                      min_active=min_nonzero(lax.stop_gradient(z)), n_nonfinite=jnp.zeros((), jnp.int32))
    return mse + sparsity, terms


register(Architecture("relu", encode=encode, loss=loss))
