"""Steered forward passes and generation compiled once per steering *structure*.

``lm.logits / lm.generate(..., interventions=...)`` compile one program per set of intervention
function objects, so a sweep over alphas or features would recompile at every point. Here the steerings
(`AddDirection` / `ClampFeatures` pytrees) are arguments of the compiled function: alphas, directions,
feature indices, clamp values and SAE weights are traced, and only the structure (which kinds at which
hooks, ``where``, ``mode``, array shapes) selects the program. Results equal ``lm.logits`` /
``lm.generate_tokens`` given ``interventions(steering)``.

    out, lengths = generate_tokens(lm, ids, mask, [steer_feature(sae, 7, alpha=8.0)], max_new_tokens=32)
    texts = generate(lm, ["How do I bake bread?"], steering, chat=True)
"""
from __future__ import annotations

import weakref
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qwen_sae_jax import hooks
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.steer.interventions import Steering, interventions, validate

_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # lm -> {key: jitted fn}


def compiled(lm, key, build):
    """``jax.jit(build())`` cached per model (weakly) and ``key``."""
    per_model = _CACHE.setdefault(lm, {})
    fn = per_model.get(key)
    if fn is None:
        fn = per_model[key] = jax.jit(build())
    return fn


def _as_list(steering) -> list[Steering]:
    if steering is None:
        return []
    return [steering] if not isinstance(steering, (list, tuple)) else list(steering)


def _check_tokens(lm, tokens, attention_mask):
    ids = np.asarray(tokens)
    if ids.ndim != 2 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise UserError(f"tokens must be a non-empty [batch, seq] integer array, got shape {ids.shape}")
    if ids.min() < 0 or ids.max() >= lm.config.vocab_size:
        raise UserError(f"token ids must be in [0, {lm.config.vocab_size}), got min {ids.min()} max {ids.max()}")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    if mask.shape != ids.shape:
        raise UserError(f"attention_mask shape {mask.shape} differs from tokens shape {ids.shape}")
    return ids.astype(np.int32), mask.astype(np.int32)


def logits(lm, tokens, attention_mask=None, steering=None) -> jax.Array:
    """Logits ``[B, T, V]`` with the steerings applied (positions: see ``where`` in `interventions`)."""
    ids, mask = _check_tokens(lm, tokens, attention_mask)
    steering = validate(lm, _as_list(steering))

    def build():
        def run(params, ids, mask, steering):
            return lm.apply(params, ids, mask, interventions=interventions(steering))[0]
        return run

    return compiled(lm, ("logits",), build)(lm.params, ids, mask, steering)


def completion_logprobs(lm, prompt_ids, prompt_mask, completion_ids, completion_lengths, steering=None):
    """Log-probabilities ``[B, N]`` of each completion token given the left-padded prompt and the completion
    tokens before it (0 beyond ``completion_lengths``), under the model with ``steering`` (None: unsteered)."""
    prompt_ids, prompt_mask = _check_tokens(lm, prompt_ids, prompt_mask)
    completion_ids = np.asarray(completion_ids, np.int32)
    lengths = np.asarray(completion_lengths, np.int32)
    n = completion_ids.shape[1]
    comp_mask = (np.arange(n)[None, :] < lengths[:, None]).astype(np.int32)
    ids = np.concatenate([prompt_ids, np.where(comp_mask > 0, completion_ids, lm.pad_token_id)], axis=1)
    mask = np.concatenate([prompt_mask, comp_mask], axis=1)
    out = logits(lm, ids, mask, steering)                                     # [B, P+N, V]
    P = prompt_ids.shape[1]
    logp = jax.nn.log_softmax(out[:, P - 1:P + n - 1].astype(jnp.float32), axis=-1)   # [B, N, V]
    picked = jnp.take_along_axis(logp, jnp.asarray(ids[:, P:])[..., None], axis=-1)[..., 0]
    return np.where(comp_mask > 0, np.asarray(picked), 0.0)


def generate_tokens(lm, tokens, attention_mask=None, steering=None, *, max_new_tokens: int = 32,
                    temperature: float = 0.0, top_p: float = 1.0, seed: int = 0):
    """Steered ``lm.generate_tokens``: new tokens ``[B, N]`` and lengths ``[B]`` (numpy) for left-padded prompts."""
    from qwen_sae_jax.models.generate import generate as generate_loop

    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not temperature >= 0.0 or not 0.0 < top_p <= 1.0:
        raise UserError(f"need temperature >= 0 and top_p in (0, 1], got {temperature}, {top_p}")
    ids, mask = _check_tokens(lm, tokens, attention_mask)
    if np.any(mask[:, -1] == 0):
        raise UserError("generation needs left-padded prompts: the last column of attention_mask must be 1")
    if ids.shape[1] + max_new_tokens > lm.config.max_position_embeddings:
        raise UserError(f"prompt length {ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds "
                        f"max_position_embeddings={lm.config.max_position_embeddings}")
    extra = -ids.shape[1] % 16  # as lm.generate_tokens: >= 16 prompt positions, so prefill is never 1 position
    if extra:
        ids = np.pad(ids, ((0, 0), (extra, 0)), constant_values=lm.pad_token_id)
        mask = np.pad(mask, ((0, 0), (extra, 0)))
    steering = validate(lm, _as_list(steering))
    stops = tuple(lm.stop_token_ids())
    greedy, use_top_p = temperature == 0.0, top_p < 1.0

    def build():
        def run(params, ids, mask, steering, temperature, top_p, rng):
            interceptor = hooks.HookInterceptor((), interventions(steering))
            return generate_loop(lm.module, params, ids, mask, max_new_tokens=max_new_tokens, stop_ids=stops,
                                 pad_id=lm.pad_token_id, greedy=greedy, use_top_p=use_top_p,
                                 temperature=temperature, top_p=top_p, key=rng, wrap=interceptor.run)
        return run

    fn = compiled(lm, ("generate", max_new_tokens, stops, greedy, use_top_p), build)
    out, lengths = fn(lm.params, ids, mask, steering, jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p),
                      jax.random.key(seed))
    return np.asarray(out), np.asarray(lengths)


def generate(lm, prompts: Sequence[str], steering=None, *, chat: bool = True, max_new_tokens: int = 32,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 64) -> list[str]:
    """Steered continuations of ``prompts`` (decoded, special tokens dropped), in batches of ``batch_size``."""
    texts, _ = generate_with_tokens(lm, prompts, steering, chat=chat, max_new_tokens=max_new_tokens,
                                       temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size)
    return texts


def generate_with_tokens(lm, prompts: Sequence[str], steering=None, *, chat: bool = True, max_new_tokens: int = 32,
                         temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 64):
    """``(texts, [(prompt_ids, prompt_mask, new_ids, lengths)] per batch)``: the tokens are kept so callers
    can score the completions (e.g. the unsteered model's cross-entropy on them)."""
    prompts = list(prompts)
    if not prompts:
        raise UserError("no prompts to generate from")
    texts: list[str] = []
    batches: list = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        ids, mask = lm.tokenize(chunk, padding_side="left", chat=chat)
        ids, mask = _pad_rows(ids, mask, batch_size if len(prompts) > batch_size else len(chunk))
        out, lengths = generate_tokens(lm, ids, mask, steering, max_new_tokens=max_new_tokens,
                                       temperature=temperature, top_p=top_p, seed=seed)
        n = len(chunk)
        batches.append((ids[:n], mask[:n], out[:n], lengths[:n]))
        texts.extend(lm.tokenizer.decode(row[:k].tolist(), skip_special_tokens=True)
                     for row, k in zip(out[:n], lengths[:n]))
    return texts, batches


def _pad_rows(ids, mask, rows: int):
    """Repeat the last row so every batch has ``rows`` rows (one compiled shape per sweep)."""
    if ids.shape[0] >= rows:
        return ids, mask
    reps = rows - ids.shape[0]
    return (np.concatenate([ids, np.repeat(ids[-1:], reps, 0)]), np.concatenate([mask, np.repeat(mask[-1:], reps, 0)]))
