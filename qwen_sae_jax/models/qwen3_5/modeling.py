"""Qwen3.5 text decoders (hybrid Gated DeltaNet + gated attention; dense and MoE) in flax.linen, numerically
faithful to the torch fallbacks of ``transformers`` (eager attention, eager experts, no fla / causal-conv1d).

The module tree mirrors HF so that checkpoint keys and hook names line up::

    Qwen3_5ForCausalLM
      model: Qwen3_5Model
        embed_tokens                    Embed, embedding [V, D]
        layers_N: Qwen3_5DecoderLayer   (HF model.layers.N)
          input_layernorm               ZeroCenteredRMSNorm, weight [D]
          linear_attn: Qwen3_5GatedDeltaNet        (layer_types[N] == "linear_attention")
            in_proj_qkv                 Dense kernel [D, 2*nk*dk + nv*dv]   output [q | k | v], contiguous
            in_proj_z                   Dense kernel [D, nv*dv]
            in_proj_b / in_proj_a       Dense kernel [D, nv]
            conv1d                      CausalConv1d, kernel [Kc, C] (C = 2*nk*dk + nv*dv)
            A_log, dt_bias              [nv]
            norm                        GatedRMSNorm, weight [dv]
            out_proj                    Dense kernel [nv*dv, D]
          self_attn: Qwen3_5Attention              (layer_types[N] == "full_attention")
            q_proj                      Dense kernel [D, H*hd*2]   per head: [query | gate]
            k_proj / v_proj             Dense kernel [D, K*hd]
            q_norm / k_norm             ZeroCenteredRMSNorm over head_dim, weight [hd]
            o_proj                      Dense kernel [H*hd, D]
          post_attention_layernorm      ZeroCenteredRMSNorm
          mlp: Qwen3MLP                 (dense; shared with Qwen3)
             | Qwen3_5MoeBlock          gate [D, E], experts [E, D, I] / [E, I, D], shared_expert (Qwen3MLP),
                                        shared_expert_gate kernel [D, 1]
        norm                            ZeroCenteredRMSNorm
      lm_head                           Dense kernel [D, V] (absent when tie_word_embeddings)

Conventions that differ from Qwen3: the residual norms, the final norm and q_norm / k_norm are zero-centred
(``normed * (1 + w)``, weights initialised to 0); RoPE rotates only the first ``rotary_dim =
int(head_dim * partial_rotary_factor)`` dims of q and k; attention output is multiplied by
``sigmoid(gate)`` before ``o_proj``; the MoE router always renormalises its top-k and a shared expert is
added, scaled by ``sigmoid(shared_expert_gate(x))``.

Shapes: B batch, T query length, S key length (T, or the cache length when decoding), D hidden, H / K query /
kv heads of full attention, hd head_dim, nk / nv key / value heads of Gated DeltaNet, dk / dv their dims,
Kc the conv kernel size, C the conv channels, V vocab, E experts.

dtype policy as Qwen3 (``param_dtype`` storage, ``dtype`` compute; norms, RoPE angles, softmaxes, the decay
``g`` and the delta rule are float32).

Decoding cache (``init_cache``; apply with ``cache_index`` and ``mutable=["cache"]``): full-attention layers hold
``self_attn/{key, value} [B, S, K, hd]``; Gated DeltaNet layers hold ``linear_attn/conv_state [B, Kc-1, C]``
(the last pre-conv q|k|v columns, compute dtype) and ``linear_attn/recurrent_state [B, nv, dk, dv]`` (float32).
A call of one token uses the recurrent delta rule, longer calls the chunked one, both from the cached state.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from qwen_sae_jax.models.qwen3.modeling import (
    Dense,
    Qwen3ForCausalLM,
    Qwen3MLP,
    Qwen3Model,
    apply_rope,
    decoder_inputs,
    decoder_layers,
    grouped_attention,
    rms_normalize,
    rope_cos_sin,
    routed_experts,
    update_kv_cache,
)
from qwen_sae_jax.models.qwen3_5.config import Qwen3_5Config
from qwen_sae_jax.models.qwen3_5.gated_delta import chunk_gated_delta_rule, recurrent_gated_delta_rule

Dtype = Any


def _dense_init(config: Qwen3_5Config):
    return nn.initializers.normal(stddev=config.initializer_range)


def _proj(module: nn.Module, features: int, name: str) -> Dense:
    """A bias-free projection of ``module`` (Qwen3.5 has no biases), built inside its compact ``__call__``."""
    return Dense(features, use_bias=False, dtype=module.dtype, param_dtype=module.param_dtype,
                 kernel_init=_dense_init(module.config), name=name)


def _a_log_init(key, shape, dtype):
    """``log(uniform(0.01, 16))``, as transformers initialises ``A_log``."""
    return jnp.log(jax.random.uniform(key, shape, jnp.float32, 0.01, 16.0)).astype(dtype)


class ZeroCenteredRMSNorm(nn.Module):
    """``x / sqrt(mean(x**2) + eps) * (1 + weight)`` in float32, cast back to the input dtype (HF Qwen3_5RMSNorm;
    the weight initialises to 0)."""

    dim: int
    eps: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        weight = self.param("weight", nn.initializers.zeros, (self.dim,), self.param_dtype)
        return (rms_normalize(x, self.eps) * (1.0 + weight.astype(jnp.float32))).astype(x.dtype)


class GatedRMSNorm(nn.Module):
    """``weight * rmsnorm(x) * silu(z)`` over the last axis (HF Qwen3_5RMSNormGated; NOT zero-centred, weight
    initialises to 1): normalised in float32, cast to the input dtype, scaled, gated in float32, cast back."""

    dim: int
    eps: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, z):
        weight = self.param("weight", nn.initializers.ones, (self.dim,), self.param_dtype)
        normed = weight * rms_normalize(x, self.eps).astype(x.dtype)
        return (normed * jax.nn.silu(z.astype(jnp.float32))).astype(x.dtype)


class CausalConv1d(nn.Module):
    """Depthwise causal convolution + SiLU over time: ``out[t, c] = silu(sum_j kernel[j, c] * x[t - Kc + 1 + j, c])``
    (the last tap multiplies the current token; HF ``Conv1d(groups=C, padding=Kc-1)`` cross-correlation).

    ``x [B, T, C]``, ``state [B, Kc-1, C]`` (the inputs before ``x``; zeros at the start of a sequence) ->
    ``(out [B, T, C], new_state [B, Kc-1, C])``."""

    channels: int
    kernel_size: int
    initializer_range: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, state):
        kernel = self.param("kernel", nn.initializers.normal(self.initializer_range),
                            (self.kernel_size, self.channels), self.param_dtype).astype(self.dtype)
        T = x.shape[1]
        padded = jnp.concatenate([state.astype(x.dtype), x], axis=1)  # [B, Kc-1+T, C]
        out = sum(padded[:, j:j + T] * kernel[j] for j in range(self.kernel_size))
        return jax.nn.silu(out), padded[:, T:]


class Qwen3_5GatedDeltaNet(nn.Module):
    """Gated DeltaNet token mixer ``[B, T, D] -> [B, T, D]`` (HF Qwen3_5GatedDeltaNet).

    Padding (``token_mask [B, T]``, 1 = token) zeroes the input rows, so left padding leaves the conv and
    recurrent states at zero. Value head ``j`` reads key head ``j // (nv // nk)``."""

    config: Qwen3_5Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden_states, token_mask=None, cache_index=None):
        c = self.config
        B, T, _ = hidden_states.shape
        nk, nv = c.linear_num_key_heads, c.linear_num_value_heads
        dk, dv = c.linear_key_head_dim, c.linear_value_head_dim
        if token_mask is not None:
            hidden_states = hidden_states * token_mask[:, :, None].astype(hidden_states.dtype)

        mixed = _proj(self, c.conv_dim, "in_proj_qkv")(hidden_states)  # [B, T, C]
        z = _proj(self, c.value_dim, "in_proj_z")(hidden_states).reshape(B, T, nv, dv)
        b = _proj(self, nv, "in_proj_b")(hidden_states)  # [B, T, nv]
        a = _proj(self, nv, "in_proj_a")(hidden_states)
        dt_bias = self.param("dt_bias", nn.initializers.ones, (nv,), self.param_dtype)
        a_log = self.param("A_log", _a_log_init, (nv,), self.param_dtype)

        conv_state, state = self._read_cache(B, cache_index)
        conv = CausalConv1d(c.conv_dim, c.linear_conv_kernel_dim, c.initializer_range, dtype=self.dtype,
                            param_dtype=self.param_dtype, name="conv1d")
        mixed, conv_state = conv(mixed, conv_state)
        q = mixed[..., :c.key_dim].reshape(B, T, nk, dk)
        k = mixed[..., c.key_dim:2 * c.key_dim].reshape(B, T, nk, dk)
        v = mixed[..., 2 * c.key_dim:].reshape(B, T, nv, dv)
        q, k = jnp.repeat(q, nv // nk, axis=2), jnp.repeat(k, nv // nk, axis=2)  # [B, T, nv, dk]

        beta = jax.nn.sigmoid(b)
        g = -jnp.exp(a_log.astype(jnp.float32)) * jax.nn.softplus(a.astype(jnp.float32)
                                                                  + dt_bias.astype(jnp.float32))  # [B, T, nv]
        rule = recurrent_gated_delta_rule if cache_index is not None and T == 1 else chunk_gated_delta_rule
        out, state = rule(q, k, v, g, beta, initial_state=state)  # [B, T, nv, dv]
        if cache_index is not None:
            self.put_variable("cache", "conv_state", conv_state.astype(self.get_variable("cache", "conv_state").dtype))
            self.put_variable("cache", "recurrent_state", state)

        out = GatedRMSNorm(dv, c.rms_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(out, z)
        return _proj(self, c.hidden_size, "out_proj")(out.reshape(B, T, nv * dv))

    def _read_cache(self, batch: int, cache_index):
        """(conv_state [B, Kc-1, C], recurrent_state [B, nv, dk, dv] or None): from the cache when decoding,
        else zeros and None (the delta rule starts from a zero state)."""
        c = self.config
        if cache_index is None:
            return jnp.zeros((batch, c.linear_conv_kernel_dim - 1, c.conv_dim), self.dtype), None
        if not self.has_variable("cache", "conv_state"):
            raise ValueError("decoding with cache_index needs the 'cache' collection (see init_cache)")
        return self.get_variable("cache", "conv_state"), self.get_variable("cache", "recurrent_state")


def apply_partial_rope(x, cos, sin):
    """RoPE on the first ``cos.shape[-1]`` dims of ``x [B, T, N, hd]``; the remaining dims pass through."""
    rot = cos.shape[-1]
    return jnp.concatenate([apply_rope(x[..., :rot], cos, sin), x[..., rot:]], axis=-1)


class Qwen3_5Attention(nn.Module):
    """Gated grouped-query attention with zero-centred q/k norms and partial RoPE; ``[B, T, D] -> [B, T, D]``."""

    config: Qwen3_5Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _norm(self, name: str):
        c = self.config
        return ZeroCenteredRMSNorm(c.head_dim, c.rms_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                                   name=name)

    @nn.compact
    def __call__(self, hidden_states, cos, sin, mask_bias, cache_index=None):
        # hidden_states [B, T, D]; cos/sin [B, T, rotary_dim]; mask_bias [B, T, S] float32
        c = self.config
        B, T, _ = hidden_states.shape
        H, K, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        q_gate = _proj(self, H * hd * 2, "q_proj")(hidden_states).reshape(B, T, H, 2 * hd)  # per head [query | gate]
        q, gate = q_gate[..., :hd], q_gate[..., hd:].reshape(B, T, H * hd)
        k = _proj(self, K * hd, "k_proj")(hidden_states).reshape(B, T, K, hd)
        v = _proj(self, K * hd, "v_proj")(hidden_states).reshape(B, T, K, hd)
        q = apply_partial_rope(self._norm("q_norm")(q), cos, sin)  # [B, T, H, hd]
        k = apply_partial_rope(self._norm("k_norm")(k), cos, sin)  # [B, T, K, hd]
        if cache_index is not None:
            k, v = update_kv_cache(self, k, v, cache_index)
        out = grouped_attention(q, k, v, mask_bias, self.dtype) * jax.nn.sigmoid(gate)  # [B, T, H*hd]
        return _proj(self, c.hidden_size, "o_proj")(out)


class Qwen3_5MoeBlock(nn.Module):
    """Routed experts (top-k, renormalised) plus a shared expert scaled by ``sigmoid(shared_expert_gate(x))``;
    ``[B, T, D] -> [B, T, D]`` (HF Qwen3_5MoeSparseMoeBlock)."""

    config: Qwen3_5Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        B, T, D = x.shape
        flat = x.reshape(B * T, D)
        routed = routed_experts(self, c, flat, normalize=True)  # [N, D]
        shared = Qwen3MLP(c, c.shared_expert_intermediate_size, name="shared_expert", **kw)(flat)
        shared_gate = Dense(1, use_bias=False, kernel_init=_dense_init(c), name="shared_expert_gate", **kw)(flat)
        return (routed + jax.nn.sigmoid(shared_gate) * shared).reshape(B, T, D)


class Qwen3_5DecoderLayer(nn.Module):
    """Pre-norm block: ``h = x + mixer(norm(x)); out = h + mlp(norm(h))``, ``[B, T, D] -> [B, T, D]``; the mixer
    is ``linear_attn`` (Gated DeltaNet) or ``self_attn`` by ``config.layer_types[layer_idx]``."""

    config: Qwen3_5Config
    layer_idx: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden_states, cos, sin, mask_bias, token_mask=None, cache_index=None):
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        normed = ZeroCenteredRMSNorm(c.hidden_size, c.rms_norm_eps, name="input_layernorm", **kw)(hidden_states)
        if c.layer_types[self.layer_idx] == "linear_attention":
            mixed = Qwen3_5GatedDeltaNet(c, name="linear_attn", **kw)(normed, token_mask, cache_index)
        else:
            mixed = Qwen3_5Attention(c, name="self_attn", **kw)(normed, cos, sin, mask_bias, cache_index)
        hidden_states = hidden_states + mixed
        normed = ZeroCenteredRMSNorm(c.hidden_size, c.rms_norm_eps, name="post_attention_layernorm", **kw)(
            hidden_states)
        if c.is_moe:
            mlp = Qwen3_5MoeBlock(c, name="mlp", **kw)
        else:
            mlp = Qwen3MLP(c, c.intermediate_size, name="mlp", **kw)
        return hidden_states + mlp(normed)


class Qwen3_5Model(Qwen3Model):
    """Embedding + decoder layers + final norm (HF ``Qwen3_5TextModel`` / ``Qwen3_5MoeTextModel``)."""

    config: Qwen3_5Config  # type: ignore[assignment]  # a linen field narrowed in the subclass (the shell is shared)

    def setup(self):
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.embed_tokens = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=_dense_init(c), **kw)
        self.layers = decoder_layers(self, Qwen3_5DecoderLayer)
        self.norm = ZeroCenteredRMSNorm(c.hidden_size, c.rms_norm_eps, **kw)

    def __call__(self, input_ids, attention_mask=None, position_ids=None, *, num_layers=None, cache_index=None):
        """Final-normed hidden states ``[B, T, D]``; with ``num_layers=n`` the raw residual stream after the first
        ``n`` decoder layers. ``attention_mask`` covers the whole cache ``[B, S]`` when decoding, else ``[B, T]``."""
        c = self.config
        position_ids, token_mask, mask_bias = decoder_inputs(input_ids, attention_mask, position_ids, cache_index)
        cos, sin = rope_cos_sin(position_ids, c.rotary_dim, c.rope_theta, self.dtype)  # [B, T, rotary_dim]
        return self.run_layers(input_ids, num_layers, cos, sin, mask_bias, token_mask, cache_index)


class Qwen3_5ForCausalLM(Qwen3ForCausalLM):
    """HF ``Qwen3_5ForCausalLM`` / ``Qwen3_5MoeForCausalLM`` (the text model; the same call and conventions as
    ``Qwen3ForCausalLM``: logits ``[B, T, V]``, or with ``num_layers=n`` the residual after layer ``n-1``)."""

    config: Qwen3_5Config  # type: ignore[assignment]  # likewise

    def setup(self):
        c = self.config
        self.model = Qwen3_5Model(c, dtype=self.dtype, param_dtype=self.param_dtype, remat_layers=self.remat_layers)
        if not c.tie_word_embeddings:
            self.lm_head = Dense(c.vocab_size, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                                 kernel_init=_dense_init(c))

    def init_cache(self, batch_size: int, max_length: int, dtype=jnp.float32):
        """The zero decoding cache of this model (``init_cache``); callable on the unbound module."""
        return init_cache(self.config, batch_size, max_length, dtype)


def init_cache(config: Qwen3_5Config, batch_size: int, max_length: int, dtype=jnp.float32):
    """Zero decoding cache ``{"model": {"layers_N": {"self_attn": {"key", "value"}} | {"linear_attn":
    {"conv_state", "recurrent_state"}}}}`` for ``apply({"params": p, "cache": cache}, ..., mutable=["cache"])``."""
    c = config
    kv = (batch_size, max_length, c.num_key_value_heads, c.head_dim)
    layers = {}
    for i, kind in enumerate(c.layer_types):
        if kind == "full_attention":
            layers[f"layers_{i}"] = {"self_attn": {"key": jnp.zeros(kv, dtype), "value": jnp.zeros(kv, dtype)}}
        else:
            layers[f"layers_{i}"] = {"linear_attn": {
                "conv_state": jnp.zeros((batch_size, c.linear_conv_kernel_dim - 1, c.conv_dim), dtype),
                "recurrent_state": jnp.zeros((batch_size, c.linear_num_value_heads, c.linear_key_head_dim,
                                              c.linear_value_head_dim), jnp.float32)}}
    return {"model": layers}

