"""Logit lens of SAE decoder rows: which tokens a feature's direction promotes / suppresses directly.

Convention: ``scores[f] = (W_dec[f] / act_scale * g) @ W_U`` with

    W_U [D, V]  the unembedding: ``lm_head.kernel``, or ``embed_tokens.embedding.T`` for tied embeddings,
    g   [D]     the final RMSNorm weight, folded in (TransformerLens' ``fold_ln``); the norm's division by
                the RMS is a positive per-position scalar, which leaves every ranking unchanged,
    act_scale   the SAE's input scale, so the row is in raw activation units (``decode`` divides by it).

This is the direct effect of adding the decoder row to the last residual stream, ignoring the layers in
between: exact in meaning for SAEs on the last layer's output, a first-order read-out elsewhere.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.errors import UserError


@dataclasses.dataclass
class LogitLens:
    top_ids: np.ndarray          # [F, k] most promoted tokens, strongest first
    top_values: np.ndarray       # [F, k]
    bottom_ids: np.ndarray       # [F, k] most suppressed tokens, most negative first
    bottom_values: np.ndarray    # [F, k]


def unembedding(lm) -> tuple[jax.Array, jax.Array]:
    """``(W_U [D, V], final_norm_weight [D])`` of a `LanguageModel` (tied embeddings: ``embed_tokens.T``)."""
    params = lm.params
    if lm.config.tie_word_embeddings:
        w_u = params["model"]["embed_tokens"]["embedding"].T
    else:
        w_u = params["lm_head"]["kernel"]
    return w_u, params["model"]["norm"]["weight"]


def decoder_directions(sae) -> jax.Array:
    """[F, D] float32 decoder rows in raw activation units (``W_dec / act_scale``)."""
    return sae.W_dec.astype(jnp.float32) / sae.act_scale.astype(jnp.float32)


def logit_lens(directions, w_u, norm_weight=None, k: int = 10, chunk: int | None = None) -> LogitLens:
    """Top-``k`` promoted and suppressed tokens of every row of ``directions [F, D]`` through ``w_u [D, V]``.

    Rows are processed ``chunk`` at a time (default: about 2**26 scores per chunk), so ``[F, V]`` is never
    held at once."""
    directions = jnp.asarray(directions, jnp.float32)
    w_u = jnp.asarray(w_u, jnp.float32)
    if directions.ndim != 2 or w_u.ndim != 2 or directions.shape[1] != w_u.shape[0]:
        raise UserError(f"logit lens needs directions [F, D] and an unembedding [D, V]; got "
                        f"{tuple(directions.shape)} and {tuple(w_u.shape)}")
    F, V = directions.shape[0], w_u.shape[1]
    if not 1 <= k <= V:
        raise UserError(f"logit lens k must be in [1, vocab size {V}], got {k}")
    if norm_weight is not None:
        directions = directions * jnp.asarray(norm_weight, jnp.float32)[None, :]
    chunk = int(chunk or max(1, min(F, 2 ** 26 // V)))

    @jax.jit
    def one(rows):
        scores = jnp.dot(rows, w_u, precision=jax.lax.Precision.HIGHEST)          # [c, V]
        top_v, top_i = jax.lax.top_k(scores, k)
        bot_v, bot_i = jax.lax.top_k(-scores, k)
        return top_i, top_v, bot_i, -bot_v

    parts = []
    for start in range(0, F, chunk):
        rows = directions[start:start + chunk]
        n = rows.shape[0]
        if n < chunk:
            rows = jnp.pad(rows, ((0, chunk - n), (0, 0)))
        parts.append([np.asarray(a)[:n] for a in one(rows)])
    top_i, top_v, bot_i, bot_v = (np.concatenate([p[j] for p in parts]) for j in range(4))
    return LogitLens(top_i, top_v, bot_i, bot_v)


def sae_logit_lens(lm, sae, k: int = 10, features=None) -> LogitLens:
    """`logit_lens` of ``sae``'s decoder rows (all, or the ``features`` given) through ``lm``'s unembedding.

    Only ids the tokenizer knows are ranked: Qwen3 pads its embedding matrix past the tokenizer (151,936
    rows for 151,669 tokens), and those padding rows are no tokens."""
    if sae.cfg.d_in != lm.config.hidden_size:
        raise UserError(f"SAE d_in={sae.cfg.d_in} differs from the model width {lm.config.hidden_size}")
    directions = decoder_directions(sae)
    if features is not None:
        features = np.asarray(features, np.int64).reshape(-1)
        bad = features[(features < 0) | (features >= sae.cfg.d_sae)]
        if bad.size:
            raise UserError(f"feature index {int(bad[0])} is out of range: this SAE has d_sae={sae.cfg.d_sae} "
                            f"features (0..{sae.cfg.d_sae - 1})")
        directions = directions[features]
    w_u, g = unembedding(lm)
    if lm.tokenizer is not None:
        w_u = w_u[:, :min(w_u.shape[1], len(lm.tokenizer))]
    return logit_lens(directions, w_u, g, k=k)
