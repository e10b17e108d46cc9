"""Which activation positions are trained on (Qwen-Scope style filtering), traceable inside jit.

A position (one token of one sequence) is kept only if, at *every* hook being trained:
  * its token is not a special token (``special_ids``: <|endoftext|>, <|im_start|>, ...), if enabled,
  * it is not the first position of its sequence, if enabled,
  * its activation is finite (NaN/inf are always dropped),
  * its norm is at most ``factor`` times the hook's running median norm, if enabled.
One mask for all hooks keeps the hooks' rows aligned (row i of every hook is the same token), so every
SAE trains on the same tokens. The running median is an exponential moving average (rate 0.1) of
each batch's median norm over the positions that pass the first three tests.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

MEDIAN_EMA = 0.9   # running median <- 0.9 * running + 0.1 * batch median


@flax.struct.dataclass
class FilterState:
    median_norm: jax.Array   # [H] float32 running median norm per hook (0 = no batch seen yet)


@flax.struct.dataclass
class DropCounts:
    """Positions seen and dropped in one batch (the reasons overlap: a position may count twice)."""

    seen: jax.Array          # []
    special: jax.Array       # []
    first: jax.Array         # []
    nonfinite: jax.Array     # [H]
    outlier: jax.Array       # [H]
    kept: jax.Array          # []


def init_filter_state(num_hooks: int) -> FilterState:
    return FilterState(median_norm=jnp.zeros((num_hooks,), jnp.float32))


def filter_positions(x: jax.Array, tokens: jax.Array, state: FilterState, special_ids: jax.Array | None,
                     drop_first: bool, outlier_factor: float | None) -> tuple[jax.Array, FilterState, DropCounts]:
    """x [H, B, T, D] activations, tokens [B, T] int32 -> (keep [B*T] bool, new state, counts)."""
    H, B, T, _ = x.shape
    tok = tokens.reshape(B * T)
    special = jnp.isin(tok, special_ids) if special_ids is not None and special_ids.size else jnp.zeros_like(tok, bool)
    first = jnp.zeros((B, T), bool).at[:, 0].set(drop_first).reshape(B * T)
    norms = jnp.linalg.norm(x.reshape(H, B * T, -1).astype(jnp.float32), axis=-1)   # [H, N]
    finite = jnp.isfinite(norms)                                                      # [H, N]
    candidate = ~special & ~first & jnp.all(finite, axis=0)                           # [N]
    if outlier_factor is None:
        outlier = jnp.zeros_like(finite)
        new_state = state
    else:
        batch_median = jnp.nanmedian(jnp.where(candidate[None], norms, jnp.nan), axis=-1)   # [H]
        batch_median = jnp.where(jnp.isfinite(batch_median), batch_median, state.median_norm)
        seen = state.median_norm > 0
        reference = jnp.where(seen, state.median_norm, batch_median)                     # [H]
        outlier = finite & (norms > outlier_factor * reference[:, None])
        new_state = FilterState(jnp.where(seen, MEDIAN_EMA * state.median_norm + (1 - MEDIAN_EMA) * batch_median,
                                          batch_median))
    keep = candidate & ~jnp.any(outlier, axis=0)
    counts = DropCounts(
        seen=jnp.asarray(B * T, jnp.int32), special=jnp.sum(special, dtype=jnp.int32),
        first=jnp.sum(first, dtype=jnp.int32), nonfinite=jnp.sum(~finite, axis=-1, dtype=jnp.int32),
        outlier=jnp.sum(outlier, axis=-1, dtype=jnp.int32), kept=jnp.sum(keep, dtype=jnp.int32))
    return keep, new_state, counts
