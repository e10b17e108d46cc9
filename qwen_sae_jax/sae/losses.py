"""Training loss: `sae_loss(sae, x, *, dead_mask=None) -> (loss, LossTerms)`, dispatched to the architecture's
``loss`` through `registry.get_architecture`; the pieces the architectures share (`LossTerms`, reconstruction
terms, AuxK) are in `loss_terms`.

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

import jax
import jax.numpy as jnp
from jax import lax

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.sae.loss_terms import LossTerms, finite_rows
from qwen_sae_jax.sae.registry import get_architecture

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE


def check_batch(sae: "SAE", x: jax.Array) -> None:
    """Raise a `UserError` unless ``x`` is a [batch, d_in] matrix for this SAE."""
    if x.ndim != 2:
        raise UserError(f"sae_loss expects activations of shape [batch, d_in]; got shape {tuple(x.shape)}")
    if x.shape[-1] != sae.cfg.d_in:
        raise UserError(
            f"activations have width {x.shape[-1]} but this SAE has d_in={sae.cfg.d_in} "
            f"(hook {sae.cfg.hook_name or '?'}); pass [batch, {sae.cfg.d_in}] activations"
        )


def check_dead_mask(sae: "SAE", dead_mask: jax.Array | None) -> None:
    """Raise a `UserError` unless ``dead_mask`` is None or has shape [d_sae]."""
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
    check_batch(sae, x)
    check_dead_mask(sae, dead_mask)
    x_in = x * lax.stop_gradient(sae.act_scale).astype(x.dtype)
    x_in, valid = finite_rows(x_in)
    if dead_mask is not None:
        dead_mask = dead_mask.astype(bool)
    loss, terms = get_architecture(sae.cfg.architecture).loss(sae, x_in, valid, dead_mask, implementation)
    return loss, terms.replace(n_nonfinite=jnp.sum(~valid).astype(jnp.int32))
