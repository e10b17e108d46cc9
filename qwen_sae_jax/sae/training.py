"""What the trainer calls around its optax update, per SAE:

    loss, terms = sae_loss(sae, x, dead_mask=dead_mask(tokens_since_fired, sae.cfg))   # inside grad
    grads = before_update(sae, grads)                  # project out the decoder-row-parallel gradient
    updates, opt_state = opt.update(grads, opt_state, sae); sae = optax.apply_updates(sae, updates)
    sae = after_update(sae, terms)                     # renormalise decoder rows; BatchTopK threshold EMA
    tokens_since_fired = update_tokens_since_fired(tokens_since_fired, terms.fired, n_tokens, sae.cfg)

Use ``trainable_mask(sae)`` with ``optax.masked`` (or zero the grads) so that ``act_scale`` (a constant)
and the threshold of topk/relu (unused) and batchtopk (set by `after_update`, not by gradient) are not
touched by the optimizer, e.g. by weight decay. JumpReLU's threshold *is* trained by gradient (its
pseudo-derivative, see `architectures/jumprelu.py`); nothing else is needed for it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from qwen_sae_jax.sae.config import SAEConfig
from qwen_sae_jax.sae.core import SAE
from qwen_sae_jax.sae.loss_terms import LossTerms


def _unit_rows(W_dec: jax.Array) -> jax.Array:
    W = W_dec.astype(jnp.float32)
    return W / jnp.maximum(jnp.linalg.norm(W, axis=-1, keepdims=True), 1e-12)


def project_decoder_grads(sae: SAE, grads: SAE) -> SAE:
    """Remove from each decoder row's gradient its component parallel to that row (if the architecture keeps
    the decoder at unit norm), so the update moves along the unit sphere to first order."""
    if not sae.cfg.decoder_unit_norm:
        return grads
    unit = _unit_rows(sae.W_dec)  # [d_sae, d_in]
    g = grads.W_dec.astype(jnp.float32)
    g = g - jnp.sum(g * unit, axis=-1, keepdims=True) * unit
    return grads.replace(W_dec=g.astype(grads.W_dec.dtype))


def normalize_decoder(sae: SAE) -> SAE:
    """Rescale decoder rows to unit norm (if the architecture keeps the decoder at unit norm)."""
    if not sae.cfg.decoder_unit_norm:
        return sae
    return sae.replace(W_dec=_unit_rows(sae.W_dec).astype(sae.W_dec.dtype))


def update_batchtopk_threshold(sae: SAE, terms: LossTerms) -> SAE:
    """BatchTopK: threshold <- (1 - lr) * threshold + lr * min_active (the smallest activation the batch
    selected), for every latent; unchanged when the batch selected nothing. No-op for other architectures."""
    if sae.cfg.architecture != "batchtopk":
        return sae
    lr = sae.cfg.batchtopk_threshold_lr
    target = terms.min_active.astype(jnp.float32)
    current = sae.threshold.astype(jnp.float32)
    new = jnp.where(jnp.isfinite(target), (1 - lr) * current + lr * target, current)
    return sae.replace(threshold=new.astype(sae.threshold.dtype))


def before_update(sae: SAE, grads: SAE) -> SAE:
    """Everything to do to the gradients before the optimizer sees them."""
    return project_decoder_grads(sae, grads)


def after_update(sae: SAE, terms: LossTerms) -> SAE:
    """Everything to do to the parameters after the optimizer update."""
    return update_batchtopk_threshold(normalize_decoder(sae), terms)


def trainable_mask(sae: SAE) -> SAE:
    """A pytree of bools shaped like ``sae``: True for leaves the optimizer should update."""
    return sae.replace(
        W_enc=True, b_enc=True, W_dec=True, b_dec=True,
        threshold=sae.cfg.architecture == "jumprelu", act_scale=False,
    )


# ----------------------------------------------------------------------------------------------------
# dead latents: "dead = not fired in the last cfg.dead_tokens_threshold tokens"
# ----------------------------------------------------------------------------------------------------
def init_tokens_since_fired(cfg: SAEConfig) -> jax.Array:
    """Per-latent counter [d_sae] int32 of training tokens since the latent last fired."""
    return jnp.zeros((cfg.d_sae,), jnp.int32)


def update_tokens_since_fired(counter: jax.Array, fired: jax.Array, n_tokens: int | jax.Array,
                              cfg: SAEConfig) -> jax.Array:
    """Reset the latents that fired in this batch, add ``n_tokens`` to the others (saturating at the dead
    threshold, so the int32 counter never overflows)."""
    limit = cfg.dead_tokens_threshold
    n = jnp.minimum(jnp.asarray(n_tokens, jnp.int32), limit)
    grown = jnp.where(counter >= limit - n, limit, counter + n)
    return jnp.where(fired, 0, grown).astype(jnp.int32)


def dead_mask(counter: jax.Array, cfg: SAEConfig) -> jax.Array:
    """[d_sae] bool: latents that have not fired in the last ``cfg.dead_tokens_threshold`` tokens."""
    return counter >= cfg.dead_tokens_threshold
