"""Run the model over token windows and fold every SAE's latents into its `FeatureState`, one compiled step
per batch for all SAEs (one forward, stopping at the deepest hooked layer).

    data = collect_features(lm, {"layers.1": sae}, windows, n_examples=20)   # {name: FeatureData}
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping

import jax
import jax.numpy as jnp

from qwen_sae_jax.analysis.corpus import TokenWindows, position_mask
from qwen_sae_jax.analysis.examples import FeatureData, init_state, update
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.lm import check_saes_fit

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE


def special_ids_of(lm) -> list[int]:
    """Special-token ids of the model's tokenizer (none without a tokenizer)."""
    if lm.tokenizer is None:
        return []
    from qwen_sae_jax.data.tokens import special_token_ids

    return special_token_ids(lm.tokenizer)


def encode_step(lm, saes: Mapping[str, "SAE"], special_ids: Iterable[int] = (), exclude_first: bool = True):
    """A jitted ``(params, saes, ids, mask) -> ({name: z [B, T, F] float32}, valid [B, T], real [B, T])``."""
    hooks = sorted({sae.cfg.hook_name for sae in saes.values()}, key=lm.hook_names.index)
    special = jnp.asarray(sorted(set(int(i) for i in special_ids)), jnp.int32)

    def latents(params, sae_tree, ids, mask):
        _, acts = lm.apply(params, ids, mask, capture=hooks, stop_after_capture=True)
        valid = position_mask(ids, mask, special, exclude_first)
        z = {name: sae.encode(acts[sae.cfg.hook_name]).astype(jnp.float32) for name, sae in sae_tree.items()}
        return z, valid, mask.astype(bool)

    return latents


def collect_features(lm, saes: Mapping[str, "SAE"], windows: TokenWindows, *, n_examples: int = 20,
                     left: int = 8, right: int = 4, batch_size: int = 8, special_ids: Iterable[int] | None = None,
                     exclude_first: bool = True, progress=None) -> dict[str, FeatureData]:
    """Max-activating examples, densities and histograms of every SAE over ``windows``.

    ``special_ids`` default to the tokenizer's special tokens (never counted as firing positions; they are
    still shown in context windows). ``progress(done_windows, total)`` is called after each batch."""
    check_saes_fit(lm, saes)
    if n_examples < 1 or left < 0 or right < 0 or batch_size < 1:
        raise UserError(f"n_examples and batch_size must be >= 1, left/right >= 0; got {n_examples}, "
                        f"{batch_size}, {left}, {right}")
    special = special_ids_of(lm) if special_ids is None else list(special_ids)
    latents = encode_step(lm, saes, special, exclude_first)

    @jax.jit
    def step(params, sae_tree, states, ids, mask, seq_start):
        z, valid, real = latents(params, sae_tree, ids, mask)
        return {name: update(states[name], z[name], ids, valid, real, seq_start) for name in states}

    states = {name: init_state(sae.cfg.d_sae, n_examples, left, right) for name, sae in saes.items()}
    total = windows.input_ids.shape[0]
    for start, ids, mask in windows.batches(batch_size):
        states = step(lm.params, dict(saes), states, jnp.asarray(ids), jnp.asarray(mask), jnp.int32(start))
        if progress is not None:
            progress(min(start + batch_size, total), total)
    return {name: FeatureData.from_state(state) for name, state in states.items()}
