"""Traceable pieces of the evaluation: which positions count, and forwards with SAEs spliced in.

Positions (``token_mask``, ``outlier_positions``): a position is evaluated when it is a real token
(attention mask), not a special token, (``exclude_first``) not the first real token of its row, and
(optionally) not a norm outlier — the positions the training pipeline (`qwen_sae_jax.data.filter`)
keeps. At every other position the activation flows on unchanged in all variants (spliced, zero- and
mean-ablated), and no loss is counted there. The next-token loss at position t (predicting token t+1)
counts when position t is evaluated and t+1 is a real token.

Splicing goes through the model's intervention hooks: ``act -> where(mask, sae(act), act)`` at each hooked
site, several sites at once when several SAEs are given (they must sit at distinct hooks).
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from qwen_sae_jax.eval.metrics import kl_from_log_probs, next_token_ce


def token_mask(input_ids: jax.Array, attention_mask: jax.Array, special_ids: jax.Array | None,
               exclude_first: bool) -> jax.Array:
    """[B, T] bool: the positions that are evaluated (see the module docstring)."""
    real = attention_mask.astype(bool)
    keep = real
    if special_ids is not None and special_ids.size:
        keep = keep & ~jnp.isin(input_ids, special_ids)
    if exclude_first:
        first = real & (jnp.cumsum(real.astype(jnp.int32), axis=-1) == 1)
        keep = keep & ~first
    return keep


def outlier_positions(acts, mask: jax.Array, factor: float) -> jax.Array:
    """[B, T] bool: positions whose norm at any of ``acts`` ([B, T, D] each) exceeds ``factor`` times that
    hook's median norm over the ``mask`` positions of the batch (training's norm-outlier filter, with the
    batch median standing in for its running median)."""
    out = jnp.zeros(mask.shape, bool)
    for act in acts:
        norms = jnp.linalg.norm(act.astype(jnp.float32), axis=-1)                 # [B, T]
        median = jnp.nanmedian(jnp.where(mask, norms, jnp.nan))
        out = out | (jnp.isfinite(median) & (norms > factor * median))
    return out


def loss_mask(mask: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """[B, T-1] bool: next-token losses that count (position evaluated, target a real token)."""
    return mask[:, :-1] & attention_mask[:, 1:].astype(bool)


MODES = ("spliced", "zero", "mean")


def replacement_intervention(sae, mean: jax.Array, mask: jax.Array, mode: jax.Array):
    """``act -> where(mask, new, act)`` where ``new`` is ``sae(act)`` (mode 0), zeros (mode 1) or the site's
    mean activation ``mean`` [D] (mode 2). ``mode`` is a traced int32 scalar and the choice a `lax.switch`,
    so one compiled forward serves all three variants and only the chosen branch runs."""
    branches = [lambda act: sae(act).astype(act.dtype), jnp.zeros_like,
                lambda act: jnp.broadcast_to(mean, act.shape).astype(act.dtype)]

    def intervention(act):                                   # act [B, T, D]
        new = jax.lax.switch(mode, branches, act)
        return jnp.where(mask[..., None], new, act)
    return intervention


def unit_sums(lm, params, saes: Mapping[str, object], means: Mapping[str, jax.Array], input_ids, attention_mask,
              mask, clean_logits) -> dict[str, jax.Array]:
    """Summed next-token CE with the SAEs ``{hook: SAE}`` spliced in together, with those sites zero-ablated
    and mean-ablated, and KL(clean || spliced / zero-ablated), over the counted positions. Traceable; the
    three forwards are one `lax.map` over the variant."""
    valid = loss_mask(mask, attention_mask).astype(jnp.float32)           # [B, T-1]
    clean_log_probs = jax.nn.log_softmax(clean_logits[:, :-1].astype(jnp.float32), axis=-1)

    def one_variant(mode):
        interventions = {h: replacement_intervention(sae, means[h], mask, mode) for h, sae in saes.items()}
        logits, _ = lm.apply(params, input_ids, attention_mask, interventions=interventions)
        ce = jnp.sum(next_token_ce(logits, input_ids) * valid)
        kl = jnp.sum(kl_from_log_probs(clean_log_probs, logits[:, :-1]) * valid)
        return ce, kl

    ce, kl = jax.lax.map(one_variant, jnp.arange(len(MODES), dtype=jnp.int32))
    return {"count": jnp.sum(valid), "ce_spliced": ce[0], "ce_zero": ce[1], "ce_mean": ce[2],
            "kl_spliced": kl[0], "kl_zero": kl[1]}
