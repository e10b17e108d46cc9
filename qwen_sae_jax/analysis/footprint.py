"""Per-text feature footprints: which SAE features fire anywhere in each text.

A feature *fires on a text* when its activation exceeds ``threshold`` (default 0) at any counted position
of the text (real, non-special tokens; with ``exclude_first`` not the first token; texts truncated to
``max_len`` tokens). The result is a dense boolean matrix ``fired [N_texts, d_sae]`` (one byte per entry:
10k texts x 32k features is 330 MB), computed batch by batch on device.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.analysis.collect import encode_step, special_ids_of
from qwen_sae_jax.analysis.corpus import text_windows
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.lm import check_saes_fit


@dataclasses.dataclass
class Footprints:
    fired: np.ndarray        # [N, F] bool: feature f fired on text i
    n_positions: np.ndarray  # [N] counted positions per text
    truncated: int           # texts cut at max_len

    @property
    def n_texts(self) -> int:
        return self.fired.shape[0]


def text_footprints(lm, sae, texts: Sequence[str], *, max_len: int = 256, batch_size: int = 16,
                    threshold: float = 0.0, exclude_first: bool = True, chat: bool = False) -> Footprints:
    """`Footprints` of ``texts`` under ``sae`` (see the module docstring)."""
    check_saes_fit(lm, {"sae": sae})
    if max_len < 1 or batch_size < 1:
        raise UserError(f"max_len and batch_size must be >= 1, got {max_len} and {batch_size}")
    windows = text_windows(lm.tokenizer, list(texts), max_len, lm.pad_token_id, chat=chat)
    latents = encode_step(lm, {"sae": sae}, special_ids_of(lm), exclude_first)

    @jax.jit
    def step(params, sae_tree, ids, mask):
        z, valid, _ = latents(params, sae_tree, ids, mask)
        fired = jnp.any(valid[..., None] & (z["sae"] > threshold), axis=1)      # [B, F]
        return fired, jnp.sum(valid, axis=1, dtype=jnp.int32)

    # sort by length so each batch is padded only to its own longest text (rounded up to 32 tokens)
    lengths = windows.attention_mask.sum(axis=1)
    order = np.argsort(-lengths, kind="stable")
    fired = np.zeros((len(texts), sae.cfg.d_sae), bool)
    counted = np.zeros((len(texts),), np.int64)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = int(min(windows.input_ids.shape[1], -(-int(lengths[rows].max()) // 32) * 32))
        ids = np.zeros((batch_size, width), np.int32)
        mask = np.zeros((batch_size, width), np.int32)
        ids[:len(rows)] = windows.input_ids[rows, :width]
        mask[:len(rows)] = windows.attention_mask[rows, :width]
        f, c = jax.device_get(step(lm.params, {"sae": sae}, jnp.asarray(ids), jnp.asarray(mask)))
        fired[rows] = f[:len(rows)]
        counted[rows] = c[:len(rows)]
    return Footprints(fired, counted, windows.truncated)
