"""The loss pieces every architecture shares: the `LossTerms` record, reconstruction terms, AuxK, NaN rows.

A leaf module (it imports no other SAE module), so the architectures and `losses.sae_loss` can both use it
without importing each other. The conventions of each term are in `losses`' docstring.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax


class LossTerms(flax.struct.PyTreeNode):
    """Loss terms of one batch, logged separately by the trainer (conventions in `losses`' docstring)."""

    mse: jax.Array  # []
    fvu: jax.Array  # []
    aux: jax.Array  # []
    sparsity: jax.Array  # []
    l0: jax.Array  # [] mean number of non-zero latents per (finite) token
    fired: jax.Array  # [d_sae] bool: latents non-zero on at least one finite token of this batch
    min_active: jax.Array  # [] smallest non-zero latent value in the batch (inf if none); BatchTopK's threshold target
    n_nonfinite: jax.Array  # [] int32: token rows skipped because they held NaN/inf


def finite_rows(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(x with non-finite rows zeroed [B, d_in], valid [B] bool)."""
    valid = jnp.all(jnp.isfinite(x), axis=-1)
    return jnp.where(valid[:, None], x, 0), valid


def reconstruction_terms(x: jax.Array, x_hat: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mse, fvu) over the valid rows. x, x_hat [B, d_in], valid [B]."""
    w = valid.astype(jnp.float32)
    n_valid = jnp.maximum(jnp.sum(w), 1.0)
    sq_err = jnp.sum(jnp.square(x_hat.astype(jnp.float32) - x.astype(jnp.float32)), axis=-1)  # [B]
    total_sq_err = jnp.sum(w * sq_err)
    x32 = x.astype(jnp.float32)
    mean = jnp.sum(w[:, None] * x32, axis=0) / n_valid  # [d_in]
    total_var = jnp.sum(w * jnp.sum(jnp.square(x32 - mean), axis=-1))
    mse = total_sq_err / n_valid
    fvu = total_sq_err / jnp.maximum(total_var, jnp.finfo(jnp.float32).tiny)
    return mse, fvu


def auxk_scale(dead_mask: jax.Array, k_aux: int) -> jax.Array:
    """Gao et al.'s AuxK weight min(num_dead / k_aux, 1)."""
    return jnp.minimum(jnp.sum(dead_mask.astype(jnp.float32)) / k_aux, 1.0)


def auxk_loss(aux_decode: jax.Array, residual: jax.Array, valid: jax.Array, dead_mask: jax.Array,
              k_aux: int) -> jax.Array:
    """Unweighted AuxK loss (Gao et al. 2024): ``scale * mean_b ||aux_decode[b] - residual[b]||^2`` where
    ``aux_decode`` [B, d_in] is the bias-free decode of each token's top-k_aux dead latents, ``residual``
    = x - x_hat (gradient stopped here) and scale = min(num_dead / k_aux, 1)."""
    w = valid.astype(jnp.float32)
    n_valid = jnp.maximum(jnp.sum(w), 1.0)
    err = jnp.sum(jnp.square(aux_decode.astype(jnp.float32) - lax.stop_gradient(residual).astype(jnp.float32)), axis=-1)
    return auxk_scale(dead_mask, k_aux) * jnp.sum(w * err) / n_valid


def min_nonzero(acts: jax.Array) -> jax.Array:
    """The smallest positive entry of ``acts`` as a float32 scalar (inf when none is positive)."""
    return jnp.min(jnp.where(acts > 0, acts.astype(jnp.float32), jnp.inf))
