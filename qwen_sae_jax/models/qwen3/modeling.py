"""Qwen3 dense and MoE decoders in flax.linen, numerically faithful to ``transformers``.

The module tree mirrors HF so that checkpoint keys and hook names line up::

    Qwen3ForCausalLM
      model: Qwen3Model
        embed_tokens                    Embed, embedding [V, D]
        layers_N: Qwen3DecoderLayer     (HF model.layers.N)
          input_layernorm               RMSNorm, weight [D]
          self_attn: Qwen3Attention
            q_proj / k_proj / v_proj    Dense, kernel [D, H*hd] / [D, K*hd] / [D, K*hd]
            q_norm / k_norm             RMSNorm over head_dim, weight [hd]
            o_proj                      Dense, kernel [H*hd, D]
          post_attention_layernorm      RMSNorm
          mlp: Qwen3MLP                 gate_proj/up_proj kernel [D, I], down_proj kernel [I, D]
             | Qwen3MoeSparseMoeBlock   gate (router) kernel [D, E]; experts: gate_proj/up_proj [E, D, I],
                                        down_proj [E, I, D]
        norm                            RMSNorm
      lm_head                           Dense kernel [D, V] (absent when tie_word_embeddings)

Dense kernels are stored ``[in, out]`` (the transpose of torch's ``nn.Linear.weight``); every ``Dense`` and the
tied LM head multiply their input as a ``[B*T, D]`` matrix (`as_matrix`).
Shapes in comments: B batch, T query length, S key length (T, or the cache length when decoding),
D hidden, H query heads, K key/value heads, G = H // K, hd head_dim, V vocab, E experts.

dtype policy: ``param_dtype`` is the storage dtype of the parameters, ``dtype`` the compute dtype;
RMSNorm statistics, RoPE angles, the attention softmax and the router softmax are float32.

KV cache: when ``cache_index`` is given, each attention module reads and writes the variables
``cache/key`` and ``cache/value`` ``[B, S, K, hd]`` (make them with ``init_cache``; apply with
``mutable=["cache"]``); the keys of this call are written at ``cache_index`` and ``attention_mask``
then covers the whole cache ``[B, S]``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from qwen_sae_jax.models.qwen3.config import Qwen3Config

Dtype = Any


def _dense_init(config: Qwen3Config):
    return nn.initializers.normal(stddev=config.initializer_range)


def as_matrix(fn: Callable, x):
    """``fn`` applied to ``x [..., D]`` seen as a matrix ``[prod(...), D]``, its output ``[prod(...), F]`` given
    back the leading dims ``[..., F]``. The same values; under differentiation the weight gradient of a matmul in
    ``fn`` is one 2-D matmul (XLA:CPU runs one over ``[B, T, D]``, which contracts two dims, about 2x slower)."""
    y = fn(x.reshape(-1, x.shape[-1]))
    return y.reshape(*x.shape[:-1], y.shape[-1])


class Dense(nn.Dense):
    """`nn.Dense` (same parameters, same values) that multiplies its input as a matrix (`as_matrix`)."""

    def __call__(self, inputs):
        return as_matrix(super().__call__, inputs)


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x**2) + eps)`` over the last axis, statistics in float32 (HF Qwen3RMSNorm)."""

    dim: int
    eps: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        weight = self.param("weight", nn.initializers.ones, (self.dim,), self.param_dtype)
        return weight.astype(self.dtype) * rms_normalize(x, self.eps).astype(self.dtype)


def rms_normalize(x, eps: float):
    """``x / sqrt(mean(x**2) + eps)`` over the last axis, in float32 (returns float32)."""
    x32 = x.astype(jnp.float32)
    return x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)


def rope_cos_sin(position_ids, head_dim: int, theta: float, dtype):
    """cos, sin ``[B, T, hd]`` for integer ``position_ids [B, T]`` (HF default RoPE, halves layout)."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    freqs = position_ids.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)  # [B, T, hd/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # [B, T, hd]
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def apply_rope(x, cos, sin):
    """Rotate ``x [B, T, N, hd]`` by ``cos, sin [B, T, hd]`` (HF ``rotate_half`` convention)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


class Qwen3Attention(nn.Module):
    """Grouped-query attention with per-head q/k RMSNorm and RoPE; output after ``o_proj`` ``[B, T, D]``."""

    config: Qwen3Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _proj(self, features: int, name: str):
        return Dense(features, use_bias=self.config.attention_bias, dtype=self.dtype,
                     param_dtype=self.param_dtype, kernel_init=_dense_init(self.config), name=name)

    def _norm(self, name: str):
        c = self.config
        return RMSNorm(c.head_dim, c.rms_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    @nn.compact
    def __call__(self, hidden_states, cos, sin, mask_bias, cache_index=None):
        # hidden_states [B, T, D]; cos/sin [B, T, hd]; mask_bias [B, T, S] float32 (0 or very negative)
        c = self.config
        B, T, _ = hidden_states.shape
        H, K, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        q = self._proj(H * hd, "q_proj")(hidden_states).reshape(B, T, H, hd)
        k = self._proj(K * hd, "k_proj")(hidden_states).reshape(B, T, K, hd)
        v = self._proj(K * hd, "v_proj")(hidden_states).reshape(B, T, K, hd)
        q = apply_rope(self._norm("q_norm")(q), cos, sin)  # [B, T, H, hd]
        k = apply_rope(self._norm("k_norm")(k), cos, sin)  # [B, T, K, hd]

        if cache_index is not None:
            k, v = update_kv_cache(self, k, v, cache_index)
        out = grouped_attention(q, k, v, mask_bias, self.dtype)  # [B, T, H*hd]
        return Dense(c.hidden_size, use_bias=c.attention_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=_dense_init(c), name="o_proj")(out)


def update_kv_cache(module: nn.Module, k, v, cache_index):
    """Write this call's ``k, v [B, T, K, hd]`` into ``module``'s ``cache/key``, ``cache/value`` ``[B, S, K, hd]``
    at ``cache_index``; returns the whole cache (keys, values) in the module's compute dtype."""
    if not module.has_variable("cache", "key"):
        raise ValueError("decoding with cache_index needs the 'cache' collection (see init_cache)")
    cached_k: jax.Array = module.get_variable("cache", "key")  # [B, S, K, hd]
    cached_v: jax.Array = module.get_variable("cache", "value")
    start = (0, cache_index, 0, 0)
    k = jax.lax.dynamic_update_slice(cached_k, k.astype(cached_k.dtype), start)
    v = jax.lax.dynamic_update_slice(cached_v, v.astype(cached_v.dtype), start)
    module.put_variable("cache", "key", k)
    module.put_variable("cache", "value", v)
    return k.astype(module.dtype), v.astype(module.dtype)


def grouped_attention(q, k, v, mask_bias, dtype):
    """Softmax attention of ``q [B, T, H, hd]`` over ``k, v [B, S, K, hd]`` (query head ``h`` reads kv head
    ``h // (H // K)``, HF ``repeat_kv`` order), scaled by ``hd ** -0.5``, float32 softmax, plus ``mask_bias
    [B, T, S]``; returns ``[B, T, H * hd]`` in ``dtype`` (HF eager attention)."""
    B, T, H, hd = q.shape
    K = k.shape[2]
    q = q.reshape(B, T, K, H // K, hd)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32) * (hd ** -0.5)  # [B, K, G, T, S]
    scores = scores + mask_bias[:, None, None, :, :]
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
    return jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(B, T, H * hd)


class Qwen3MLP(nn.Module):
    """SwiGLU: ``down_proj(silu(gate_proj(x)) * up_proj(x))``, ``[B, T, D] -> [B, T, D]``."""

    config: Qwen3Config
    intermediate_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.config

        def dense(features, name):
            return Dense(features, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                         kernel_init=_dense_init(c), name=name)

        gate = dense(self.intermediate_size, "gate_proj")(x)  # [B, T, I]
        up = dense(self.intermediate_size, "up_proj")(x)
        return dense(c.hidden_size, "down_proj")(jax.nn.silu(gate) * up)


class Qwen3MoeExperts(nn.Module):
    """``E`` SwiGLU experts with stacked weights, applied to routed tokens.

    Tokens are sorted by expert and multiplied group-wise with ``jax.lax.ragged_dot`` so only the
    ``k`` chosen experts per token are computed.
    """

    config: Qwen3Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, expert_index, expert_weight):
        # x [N, D]; expert_index [N, k] int32; expert_weight [N, k] -> [N, D]
        c = self.config
        E, D, I = c.num_experts, c.hidden_size, c.moe_intermediate_size  # noqa: E741 (shape letters)
        init = _dense_init(c)
        w_gate = self.param("gate_proj", init, (E, D, I), self.param_dtype).astype(self.dtype)
        w_up = self.param("up_proj", init, (E, D, I), self.param_dtype).astype(self.dtype)
        w_down = self.param("down_proj", init, (E, I, D), self.param_dtype).astype(self.dtype)

        N, k = expert_index.shape
        flat_expert = expert_index.reshape(-1)  # [N*k]
        order = jnp.argsort(flat_expert, stable=True)  # assignment slots grouped by expert
        token_of_slot = order // k  # [N*k]
        xs = x[token_of_slot]  # [N*k, D]
        group_sizes = jnp.bincount(flat_expert, length=E).astype(jnp.int32)  # [E]
        gate = jax.lax.ragged_dot(xs, w_gate, group_sizes)  # [N*k, I]
        up = jax.lax.ragged_dot(xs, w_up, group_sizes)
        out = jax.lax.ragged_dot(jax.nn.silu(gate) * up, w_down, group_sizes)  # [N*k, D]
        out = out * expert_weight.reshape(-1)[order][:, None].astype(out.dtype)
        return jnp.zeros((N, D), out.dtype).at[token_of_slot].add(out)


class Qwen3MoeSparseMoeBlock(nn.Module):
    """Router softmax (float32) -> top-k experts (renormalised if ``norm_topk_prob``) -> weighted sum."""

    config: Qwen3Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        # x [B, T, D] -> [B, T, D]
        c = self.config
        B, T, D = x.shape
        flat = x.reshape(B * T, D)
        out = routed_experts(self, c, flat, normalize=c.norm_topk_prob)
        return out.reshape(B, T, D)


def routed_experts(module: nn.Module, config, x, *, normalize: bool):
    """The routed half of a MoE block; call it inside ``module``'s compact ``__call__``: router ``gate``
    (kernel ``[D, E]``), float32 softmax, top-k (renormalised to sum 1 if ``normalize``), then the ``experts``
    weighted by those probabilities. ``x [N, D] -> [N, D]``; ``config`` has the MoE fields of Qwen3Config."""
    kw = dict(dtype=module.dtype, param_dtype=module.param_dtype)
    router = Dense(config.num_experts, use_bias=False, kernel_init=_dense_init(config), name="gate", **kw)
    router_logits = router(x)  # [N, E]
    probs = jax.nn.softmax(router_logits.astype(jnp.float32), axis=-1)
    top_p, top_i = jax.lax.top_k(probs, config.num_experts_per_tok)  # [N, k]
    if normalize:
        top_p = top_p / jnp.sum(top_p, axis=-1, keepdims=True)
    top_p = top_p.astype(router_logits.dtype)
    return Qwen3MoeExperts(config, name="experts", **kw)(x, top_i, top_p)


class Qwen3DecoderLayer(nn.Module):
    """Pre-norm block: ``h = x + self_attn(norm(x)); out = h + mlp(norm(h))``, ``[B, T, D] -> [B, T, D]``."""

    config: Qwen3Config
    layer_idx: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden_states, cos, sin, mask_bias, cache_index=None):
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn_out = Qwen3Attention(c, name="self_attn", **kw)(
            RMSNorm(c.hidden_size, c.rms_norm_eps, name="input_layernorm", **kw)(hidden_states),
            cos, sin, mask_bias, cache_index)
        hidden_states = hidden_states + attn_out
        normed = RMSNorm(c.hidden_size, c.rms_norm_eps, name="post_attention_layernorm", **kw)(hidden_states)
        if c.is_dense_mlp(self.layer_idx):
            mlp = Qwen3MLP(c, c.intermediate_size, name="mlp", **kw)
        else:
            mlp = Qwen3MoeSparseMoeBlock(c, name="mlp", **kw)
        return hidden_states + mlp(normed)


def attention_bias(attention_mask, query_len: int, cache_index=None):
    """Additive float32 mask ``[B, T, S]``: causal by buffer index, padding from ``attention_mask [B, S]``.

    Query ``t`` sits at buffer index ``cache_index + t`` (``cache_index`` 0 without a cache) and sees key
    ``s`` iff ``s <= cache_index + t`` and ``attention_mask[b, s]``. Masked entries get float32 min, as HF.
    """
    B, S = attention_mask.shape
    offset = 0 if cache_index is None else cache_index
    q_idx = offset + jnp.arange(query_len)[:, None]  # [T, 1]
    allowed = (jnp.arange(S)[None, :] <= q_idx)[None] & attention_mask.astype(bool)[:, None, :]  # [B, T, S]
    return jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)


def decoder_inputs(input_ids, attention_mask, position_ids, cache_index):
    """``(position_ids [B, T], token_mask [B, T] or None, mask_bias [B, T, S])`` of a forward call.

    Positions default to ``cache_index + 0..T-1``; ``attention_mask`` (``[B, T]``, or ``[B, S]`` over the whole
    cache when decoding; None = no padding) gives ``token_mask``, this call's slice of it."""
    B, T = input_ids.shape
    offset = 0 if cache_index is None else cache_index
    if position_ids is None:
        position_ids = jnp.broadcast_to(offset + jnp.arange(T, dtype=jnp.int32)[None], (B, T))
    token_mask = None
    if attention_mask is None:
        if cache_index is not None:
            raise ValueError("decoding with a cache needs attention_mask [B, S] over the whole cache")
        attention_mask = jnp.ones((B, T), jnp.int32)
    else:
        token_mask = jax.lax.dynamic_slice_in_dim(attention_mask, offset, T, axis=1)
    return position_ids, token_mask, attention_bias(attention_mask, T, cache_index)


def decoder_layers(module: nn.Module, layer_class: type) -> list[nn.Module]:
    """The decoder layers of ``module`` (a model: ``config``, ``dtype``, ``param_dtype``, ``remat_layers``), built in
    its ``setup``: ``layer_class(config, i)`` for every layer, each under ``nn.remat`` when ``remat_layers``."""
    c = module.config
    if module.remat_layers:
        layer_class = remat_layer_class(layer_class)
    return [layer_class(c, i, dtype=module.dtype, param_dtype=module.param_dtype) for i in range(c.num_hidden_layers)]


@functools.cache
def remat_layer_class(layer_class: type) -> type:
    """``layer_class`` whose ``__call__`` is one ``jax.checkpoint`` saving nothing inside (``nn.remat``, policy
    ``nothing_saveable``): the backward pass keeps the layer's inputs and outputs and recomputes the rest. The
    parameters, their names and the layer's numbers are those of ``layer_class``; a subclass, so code that
    recognises the layer by ``isinstance`` (`hooks`) still does."""
    return nn.remat(layer_class, policy=jax.checkpoint_policies.nothing_saveable)


class Qwen3Model(nn.Module):
    """Embedding + decoder layers + final norm (HF ``Qwen3Model`` / ``Qwen3MoeModel``). ``remat_layers``: each
    decoder layer is rematerialised in the backward pass (`remat_layer_class`)."""

    config: Qwen3Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat_layers: bool = False

    def setup(self):
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.embed_tokens = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=_dense_init(c), **kw)
        self.layers = decoder_layers(self, Qwen3DecoderLayer)
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, **kw)

    def __call__(self, input_ids, attention_mask=None, position_ids=None, *, num_layers=None, cache_index=None):
        """Final-normed hidden states ``[B, T, D]``; with ``num_layers=n`` the raw residual stream after
        the first ``n`` decoder layers (layers ``>= n`` and the final norm are not computed)."""
        c = self.config
        position_ids, _, mask_bias = decoder_inputs(input_ids, attention_mask, position_ids, cache_index)
        cos, sin = rope_cos_sin(position_ids, c.head_dim, c.rope_theta, self.dtype)
        return self.run_layers(input_ids, num_layers, cos, sin, mask_bias, cache_index)

    def run_layers(self, input_ids, num_layers, *layer_args):
        """Embed, run the first ``num_layers`` decoder layers (all when None) on ``(hidden, *layer_args)``, then
        the final norm unless truncated."""
        hidden_states = self.embed_tokens(input_ids)  # [B, T, D]
        n = self.config.num_hidden_layers if num_layers is None else num_layers
        for layer in self.layers[:n]:
            hidden_states = layer(hidden_states, *layer_args)
        if num_layers is not None:
            return hidden_states
        return self.norm(hidden_states)

    def attend(self, hidden_states):
        """Tied LM head: ``hidden_states @ embed_tokens.embedding.T``."""
        return as_matrix(self.embed_tokens.attend, hidden_states)


class Qwen3ForCausalLM(nn.Module):
    """HF ``Qwen3ForCausalLM`` / ``Qwen3MoeForCausalLM``.

    ``apply({"params": p}, input_ids [B, T], attention_mask=None [B, T] (1 = token, 0 = padding),
    position_ids=None [B, T])`` returns logits ``[B, T, V]`` in the compute dtype. Without
    ``position_ids`` positions are ``0..T-1`` for every row (HF's forward does the same; for left-padded
    rows pass positions counted from the first real token). With ``num_layers=n`` (a Python int) it
    returns the residual stream after decoder layer ``n-1`` ``[B, T, D]`` and does not compute the
    layers above, the final norm or the LM head. ``remat_layers=True`` checkpoints each decoder layer (gradient
    checkpointing for training: the same numbers, less memory in the backward pass).
    """

    config: Qwen3Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat_layers: bool = False

    def setup(self):
        c = self.config
        self.model = Qwen3Model(c, dtype=self.dtype, param_dtype=self.param_dtype, remat_layers=self.remat_layers)
        if not c.tie_word_embeddings:
            self.lm_head = Dense(c.vocab_size, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                                 kernel_init=_dense_init(c))

    def __call__(self, input_ids, attention_mask=None, position_ids=None, *, num_layers=None, cache_index=None):
        if num_layers is not None and not 0 <= num_layers <= self.config.num_hidden_layers:
            raise ValueError(f"num_layers={num_layers} outside [0, {self.config.num_hidden_layers}]")
        hidden_states = self.model(input_ids, attention_mask, position_ids,
                                   num_layers=num_layers, cache_index=cache_index)
        if num_layers is not None:
            return hidden_states
        if self.config.tie_word_embeddings:
            return self.model.attend(hidden_states)
        return self.lm_head(hidden_states)  # [B, T, V]

    def init_cache(self, batch_size: int, max_length: int, dtype=jnp.float32):
        """The zero decoding cache of this model (``init_cache``); callable on the unbound module."""
        return init_cache(self.config, batch_size, max_length, dtype)


def init_cache(config: Qwen3Config, batch_size: int, max_length: int, dtype=jnp.float32):
    """Zero KV cache pytree for ``apply({"params": p, "cache": cache}, ..., mutable=["cache"])``:
    ``{"model": {"layers_N": {"self_attn": {"key", "value"}}}}``, each ``[B, S, K, hd]``."""
    shape = (batch_size, max_length, config.num_key_value_heads, config.head_dim)
    layers = {f"layers_{i}": {"self_attn": {"key": jnp.zeros(shape, dtype), "value": jnp.zeros(shape, dtype)}}
              for i in range(config.num_hidden_layers)}
    return {"model": layers}
