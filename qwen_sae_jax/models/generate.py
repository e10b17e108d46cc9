"""Autoregressive generation with a decoding cache, compiled as one program (prefill + ``lax.while_loop``),
for any model family (the module provides ``init_cache``: a KV cache on attention layers, conv + recurrent
state on Qwen3.5's Gated DeltaNet layers).

Prompts are left-padded ``[B, P]`` with ``attention_mask`` (1 = token); the pads leave every cache entry at zero
(masked keys; zeroed inputs of the recurrent layers). Positions count from each row's first real token, as
``transformers``' ``generate`` does. The KV cache holds ``P + max_new_tokens`` slots; step ``t`` writes slot
``P + t``. A row stops after emitting any of ``stop_ids`` (the stop token is kept
in the output and counted in ``lengths``); finished rows emit ``pad_id``. The loop ends when every row
stopped or ``max_new_tokens`` were produced.

Sampling: ``greedy`` takes the argmax. Otherwise logits are divided by ``temperature``,
restricted to the smallest set of tokens whose probability mass reaches ``top_p`` (the most likely
token always kept), and sampled with ``jax.random.categorical`` from ``key`` folded with the step.

``wrap`` runs each model call (e.g. under a hook interceptor), so interventions apply to the prompt
and to every generated token.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp


def sample_next(logits, key, temperature, top_p, *, greedy: bool, use_top_p: bool):
    """Next token ids ``[B]`` from ``logits [B, V]``. ``greedy`` and ``use_top_p`` are static (Python bools);
    ``temperature`` and ``top_p`` may be traced."""
    logits = logits.astype(jnp.float32)
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if use_top_p:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]  # descending
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
        keep = mass_before < top_p  # always keeps the first
        cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits >= cutoff, logits, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def generate(module, params, input_ids, attention_mask, *, max_new_tokens: int,
             stop_ids: Sequence[int], pad_id: int, greedy: bool = True, use_top_p: bool = False,
             temperature=1.0, top_p=1.0, key=None, wrap: Callable | None = None, cache_dtype=None):
    """``(tokens [B, max_new_tokens] int32, lengths [B] int32)``; traceable. Static (Python) arguments:
    ``max_new_tokens``, ``stop_ids``, ``pad_id``, ``greedy``, ``use_top_p``, ``wrap``; ``temperature``,
    ``top_p`` and ``key`` may be traced. ``wrap(fn, *args, **kwargs)`` runs one model call."""
    wrap = wrap or (lambda fn, *a, **k: fn(*a, **k))
    B, P = input_ids.shape
    S = P + max_new_tokens
    key = jax.random.key(0) if key is None else key
    cache = module.init_cache(B, S, cache_dtype or module.dtype)
    mask = jnp.concatenate([attention_mask.astype(jnp.int32), jnp.zeros((B, max_new_tokens), jnp.int32)], axis=1)
    prompt_pos = jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1, 0)  # [B, P]
    stop = jnp.asarray(list(stop_ids) or [-1], jnp.int32)

    def step(cache, ids, mask, positions, index):
        logits, state = wrap(module.apply, {"params": params, "cache": cache}, ids, mask, positions,
                             cache_index=index, mutable=["cache"])
        return logits[:, -1], state["cache"]

    logits, cache = step(cache, input_ids, mask, prompt_pos, 0)
    next_pos = prompt_pos[:, -1] + 1  # [B]
    tokens = jnp.full((B, max_new_tokens), pad_id, jnp.int32)
    done = jnp.zeros((B,), bool)
    lengths = jnp.zeros((B,), jnp.int32)

    def cond(carry):
        t, _, _, _, _, _, done, _ = carry
        return (t < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        t, logits, cache, mask, pos, tokens, done, lengths = carry
        token = sample_next(logits, jax.random.fold_in(key, t), temperature, top_p, greedy=greedy,
                            use_top_p=use_top_p)
        token = jnp.where(done, pad_id, token)
        tokens = tokens.at[:, t].set(token)
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | jnp.isin(token, stop)
        mask = jax.lax.dynamic_update_slice(mask, jnp.ones((B, 1), jnp.int32), (0, P + t))
        logits, cache = step(cache, token[:, None], mask, pos[:, None], P + t)
        return t + 1, logits, cache, mask, pos + 1, tokens, done, lengths

    carry = (jnp.int32(0), logits, cache, mask, next_pos, tokens, done, lengths)
    # the last iteration also runs one (unused) model step; it keeps the loop body uniform
    _, _, _, _, _, tokens, _, lengths = jax.lax.while_loop(cond, body, carry)
    return tokens, lengths
