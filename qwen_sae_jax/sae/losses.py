"""Training loss: `sae_loss(sae, x, *, dead_mask=None) -> (loss, LossTerms)` and the pieces the
architectures share (reconstruction terms, AuxK).

Conventions (all terms are float32 scalars, computed in the normalised space ``x * act_scale``):
  * ``mse``      squared error summed over d_in, averaged over tokens (SAELens' convention),
  * ``fvu``      fraction of variance unexplained: sum of squared errors / sum of squared deviations of
                 x from its batch mean (1 - explained variance),
  * ``aux``      the auxiliary term exactly as added to the loss (coefficient applied): AuxK for
                 topk/batchtopk, the pre-activation loss for jumprelu, 0 for relu,
  * ``sparsity`` the sparsity penalty exactly as added to the loss (coefficient applied): L1 for relu,
                 L0 for jumprelu, 0 for topk/batchtopk,
  * ``loss = mse + aux + sparsity``.

NaN policy: token rows of ``x`` containing NaN or inf are skipped (zeroed and given zero weight in every
term, never selected, never counted as firing) and counted in ``LossTerms.n_nonfinite``, so a bad row
cannot put a NaN into the parameters; the trainer logs the count.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax

from qwen_sae_jax.errors import UserError

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE


@flax.struct.dataclass
class LossTerms:
    """Loss terms of one batch, logged separately by the trainer (see module docstring)."""

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


def auxk_loss(aux_decode: jax.Array, residual: jax.Array, valid: jax.Array, dead_mask: jax.Array, k_aux: int) -> jax.Array:
    """Unweighted AuxK loss (Gao et al. 2024): ``scale * mean_b ||aux_decode[b] - residual[b]||^2`` where
    ``aux_decode`` [B, d_in] is the bias-free decode of each token's top-k_aux dead latents, ``residual``
    = x - x_hat (gradient stopped here) and scale = min(num_dead / k_aux, 1)."""
    w = valid.astype(jnp.float32)
    n_valid = jnp.maximum(jnp.sum(w), 1.0)
    err = jnp.sum(jnp.square(aux_decode.astype(jnp.float32) - lax.stop_gradient(residual).astype(jnp.float32)), axis=-1)
    return auxk_scale(dead_mask, k_aux) * jnp.sum(w * err) / n_valid


def min_nonzero(acts: jax.Array) -> jax.Array:
    return jnp.min(jnp.where(acts > 0, acts.astype(jnp.float32), jnp.inf))


def check_batch(sae: "SAE", x: jax.Array) -> None:
    if x.ndim != 2:
        raise UserError(f"sae_loss expects activations of shape [batch, d_in]; got shape {tuple(x.shape)}")
    if x.shape[-1] != sae.cfg.d_in:
        raise UserError(
            f"activations have width {x.shape[-1]} but this SAE has d_in={sae.cfg.d_in} "
            f"(hook {sae.cfg.hook_name or '?'}); pass [batch, {sae.cfg.d_in}] activations"
        )


def check_dead_mask(sae: "SAE", dead_mask: jax.Array | None) -> None:
    if dead_mask is not None and tuple(dead_mask.shape) != (sae.cfg.d_sae,):
        raise UserError(f"dead_mask must have shape [d_sae]=({sae.cfg.d_sae},); got {tuple(dead_mask.shape)}")


def sae_loss(
    sae: "SAE", x: jax.Array, *, dead_mask: jax.Array | None = None, implementation: str = "auto"
) -> tuple[jax.Array, LossTerms]:
    """Training loss of one batch ``x`` [B, d_in] (raw activations; the SAE normalises them).

    ``dead_mask`` [d_sae] bool marks dead latents (see `training.dead_mask`) for AuxK (topk,
    batchtopk) and the pre-activation loss (jumprelu); None disables those terms. ``implementation``
    selects the TopK kernel ("auto", "pallas", "xla", "approx"). Differentiable w.r.t. the SAE's
    parameters; ``act_scale`` is a constant (no gradient). Returns ``(loss, LossTerms)``.
    """
    from qwen_sae_jax.sae.architectures import get_architecture

    check_batch(sae, x)
    check_dead_mask(sae, dead_mask)
    x_in = x * lax.stop_gradient(sae.act_scale).astype(x.dtype)
    x_in, valid = finite_rows(x_in)
    if dead_mask is not None:
        dead_mask = dead_mask.astype(bool)
    loss, terms = get_architecture(sae.cfg.architecture).loss(sae, x_in, valid, dead_mask, implementation)
    return loss, terms.replace(n_nonfinite=jnp.sum(~valid).astype(jnp.int32))
