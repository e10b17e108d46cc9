"""Arithmetic every architecture shares (inputs already normalised: x_in = x * act_scale)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from qwen_sae_jax.sae.select import encoder_matmul

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE


def encoder_input(sae: "SAE", x_in: jax.Array) -> jax.Array:
    """x_in - b_dec when ``apply_b_dec_to_input``, else x_in. [..., d_in]."""
    x_in = x_in.astype(sae.W_enc.dtype)
    return x_in - sae.b_dec if sae.cfg.apply_b_dec_to_input else x_in


def pre_activations(sae: "SAE", x_in: jax.Array) -> jax.Array:
    """Dense pre-activations [B, d_sae] (differentiable)."""
    return encoder_matmul(encoder_input(sae, x_in), sae.W_enc, sae.b_enc)


def decode_dense(sae: "SAE", z: jax.Array) -> jax.Array:
    """z [B, d_sae] @ W_dec + b_dec -> [B, d_in] in the normalised space."""
    out = jnp.dot(z.astype(sae.W_dec.dtype), sae.W_dec, preferred_element_type=jnp.float32)
    return (out + sae.b_dec.astype(jnp.float32)).astype(sae.W_dec.dtype)


def decoder_row_norms(sae: "SAE") -> jax.Array:
    """||W_dec[j]|| [d_sae] (float32)."""
    return jnp.linalg.norm(sae.W_dec.astype(jnp.float32), axis=-1)


def fired_and_l0(z: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(fired [d_sae] bool, mean count of non-zero latents per valid row) for dense z [B, d_sae]."""
    active = (z > 0) & valid[:, None]
    n_valid = jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)
    return jnp.any(active, axis=0), jnp.sum(active.astype(jnp.float32)) / n_valid
