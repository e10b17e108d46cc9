"""Traceable pieces of the evaluation: which positions count, and forwards with SAEs spliced in.

Positions (``token_mask``): a position is evaluated when it is a real token (attention mask), not a
special token, and (``exclude_first``) not the first real token of its row — the positions the training
pipeline (`qwen_sae_jax.data.filter`) keeps. At every other position the activation flows on
unchanged in all variants (spliced, zero- and mean-ablated), and no loss is counted there. The
next-token loss at position t (predicting token t+1) counts when position t is evaluated and t+1 is
a real token.

Splicing goes through the model's intervention hooks: ``act -> where(mask, sae(act), act)`` at each hooked
site, several sites at once when several SAEs are given (they must sit at distinct hooks).
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from qwen_sae_jax.eval.metrics import kl_divergence, next_token_ce


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


def loss_mask(mask: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """[B, T-1] bool: next-token losses that count (position evaluated, target a real token)."""
    return mask[:, :-1] & attention_mask[:, 1:].astype(bool)


def _replace(mask: jax.Array, new_fn):
    def intervention(act):                       # act [B, T, D]
        new = new_fn(act).astype(act.dtype)
        return jnp.where(mask[..., None], new, act)
    return intervention


def splice_interventions(saes: Mapping[str, object], mask: jax.Array) -> dict:
    """``{hook: act -> where(mask, sae(act), act)}`` for ``{hook: SAE}``."""
    return {hook: _replace(mask, lambda act, sae=sae: sae(act)) for hook, sae in saes.items()}


def zero_interventions(hooks, mask: jax.Array) -> dict:
    return {hook: _replace(mask, jnp.zeros_like) for hook in hooks}


def mean_interventions(means: Mapping[str, jax.Array], mask: jax.Array) -> dict:
    """``{hook: act -> where(mask, mean[hook], act)}`` with ``means[hook]`` [D]."""
    return {hook: _replace(mask, lambda act, m=m: jnp.broadcast_to(m, act.shape)) for hook, m in means.items()}


def unit_sums(lm, params, saes: Mapping[str, object], means: Mapping[str, jax.Array], input_ids, attention_mask,
              mask, clean_logits) -> dict[str, jax.Array]:
    """Summed next-token CE (spliced / zero-ablated / mean-ablated) and KL(clean || spliced / zero-ablated)
    over the counted positions, for one group of SAEs spliced together. Traceable."""
    valid = loss_mask(mask, attention_mask).astype(jnp.float32)           # [B, T-1]
    hooks = list(saes)
    out = {"count": jnp.sum(valid)}
    variants = {"spliced": splice_interventions(saes, mask), "zero": zero_interventions(hooks, mask),
                "mean": mean_interventions({h: means[h] for h in hooks}, mask)}
    for name, interventions in variants.items():
        logits, _ = lm.apply(params, input_ids, attention_mask, interventions=interventions)
        out[f"ce_{name}"] = jnp.sum(next_token_ce(logits, input_ids) * valid)
        if name != "mean":
            kl = kl_divergence(clean_logits[:, :-1], logits[:, :-1])          # [B, T-1]
            out[f"kl_{name}"] = jnp.sum(kl * valid)
    return out
