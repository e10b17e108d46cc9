"""HF checkpoint <-> Flax params of Qwen3.5 (dense and MoE): one mapping table used for loading and saving.

``MAPPING`` rows are ``(HF key template, Flax path template, layout, condition)`` (layouts of
``models.checkpoint``). ``{p}`` is the language-model prefix: ``model`` in a ``Qwen3_5ForCausalLM`` checkpoint,
``model.language_model`` in a ``Qwen3_5ForConditionalGeneration`` one (as published on the hub; its
``model.visual.*`` tower and the ``mtp.*`` multi-token-prediction heads are skipped). ``lm_head.weight`` sits at
the top level in both. MoE experts load from either storage ``transformers`` reads: one tensor per expert
(``mlp.experts.{e}.gate_proj.weight [I, D]``, the form ``save_hf`` writes, as ``save_pretrained`` does) or
fused (``mlp.experts.gate_up_proj [E, 2I, D]`` with the gate rows first, ``mlp.experts.down_proj [E, D, I]``).
The layout is detected from the checkpoint's keys.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from qwen_sae_jax.models import checkpoint
from qwen_sae_jax.models.checkpoint import Entry
from qwen_sae_jax.models.qwen3.params import PARTITION_RULES as QWEN3_RULES
from qwen_sae_jax.models.qwen3.params import count_params as _count
from qwen_sae_jax.models.qwen3_5.config import Qwen3_5Config
from qwen_sae_jax.models.qwen3_5.modeling import Qwen3_5ForCausalLM
from qwen_sae_jax.sharding import LogicalAxes

_L = "{p}.layers.{i}."
_F = "model/layers_{i}/"
# (HF key template, Flax path template, layout, condition)
MAPPING: tuple[tuple[str, str, str, str], ...] = (
    ("{p}.embed_tokens.weight", "model/embed_tokens/embedding", "copy", "always"),
    (_L + "input_layernorm.weight", _F + "input_layernorm/weight", "copy", "layer"),
    (_L + "post_attention_layernorm.weight", _F + "post_attention_layernorm/weight", "copy", "layer"),
    # Gated DeltaNet layers
    (_L + "linear_attn.in_proj_qkv.weight", _F + "linear_attn/in_proj_qkv/kernel", "linear", "linear_attention"),
    (_L + "linear_attn.in_proj_z.weight", _F + "linear_attn/in_proj_z/kernel", "linear", "linear_attention"),
    (_L + "linear_attn.in_proj_b.weight", _F + "linear_attn/in_proj_b/kernel", "linear", "linear_attention"),
    (_L + "linear_attn.in_proj_a.weight", _F + "linear_attn/in_proj_a/kernel", "linear", "linear_attention"),
    (_L + "linear_attn.conv1d.weight", _F + "linear_attn/conv1d/kernel", "conv", "linear_attention"),
    (_L + "linear_attn.A_log", _F + "linear_attn/A_log", "copy", "linear_attention"),
    (_L + "linear_attn.dt_bias", _F + "linear_attn/dt_bias", "copy", "linear_attention"),
    (_L + "linear_attn.norm.weight", _F + "linear_attn/norm/weight", "copy", "linear_attention"),
    (_L + "linear_attn.out_proj.weight", _F + "linear_attn/out_proj/kernel", "linear", "linear_attention"),
    # gated full-attention layers
    (_L + "self_attn.q_proj.weight", _F + "self_attn/q_proj/kernel", "linear", "full_attention"),
    (_L + "self_attn.k_proj.weight", _F + "self_attn/k_proj/kernel", "linear", "full_attention"),
    (_L + "self_attn.v_proj.weight", _F + "self_attn/v_proj/kernel", "linear", "full_attention"),
    (_L + "self_attn.o_proj.weight", _F + "self_attn/o_proj/kernel", "linear", "full_attention"),
    (_L + "self_attn.q_norm.weight", _F + "self_attn/q_norm/weight", "copy", "full_attention"),
    (_L + "self_attn.k_norm.weight", _F + "self_attn/k_norm/weight", "copy", "full_attention"),
    # dense MLP
    (_L + "mlp.gate_proj.weight", _F + "mlp/gate_proj/kernel", "linear", "dense_mlp"),
    (_L + "mlp.up_proj.weight", _F + "mlp/up_proj/kernel", "linear", "dense_mlp"),
    (_L + "mlp.down_proj.weight", _F + "mlp/down_proj/kernel", "linear", "dense_mlp"),
    # MoE: router, experts (per expert or fused), shared expert and its gate
    (_L + "mlp.gate.weight", _F + "mlp/gate/kernel", "linear", "moe"),
    (_L + "mlp.experts.{e}.gate_proj.weight", _F + "mlp/experts/gate_proj", "linear", "expert"),
    (_L + "mlp.experts.{e}.up_proj.weight", _F + "mlp/experts/up_proj", "linear", "expert"),
    (_L + "mlp.experts.{e}.down_proj.weight", _F + "mlp/experts/down_proj", "linear", "expert"),
    (_L + "mlp.experts.gate_up_proj", _F + "mlp/experts/gate_proj", "fused_gate", "fused_expert"),
    (_L + "mlp.experts.gate_up_proj", _F + "mlp/experts/up_proj", "fused_up", "fused_expert"),
    (_L + "mlp.experts.down_proj", _F + "mlp/experts/down_proj", "fused_down", "fused_expert"),
    (_L + "mlp.shared_expert.gate_proj.weight", _F + "mlp/shared_expert/gate_proj/kernel", "linear", "moe"),
    (_L + "mlp.shared_expert.up_proj.weight", _F + "mlp/shared_expert/up_proj/kernel", "linear", "moe"),
    (_L + "mlp.shared_expert.down_proj.weight", _F + "mlp/shared_expert/down_proj/kernel", "linear", "moe"),
    (_L + "mlp.shared_expert_gate.weight", _F + "mlp/shared_expert_gate/kernel", "linear", "moe"),
    ("{p}.norm.weight", "model/norm/weight", "copy", "always"),
    ("lm_head.weight", "lm_head/kernel", "linear", "untied"),
)

CAUSAL_LM_PREFIX = "model"
CONDITIONAL_PREFIX = "model.language_model"
# present in published checkpoints but not part of the text model (vision tower, MTP heads, rotary buffers)
_IGNORED = re.compile(r"^(model\.visual\.|mtp\.)|rotary_emb\.inv_freq$")


def expand_mapping(config: Qwen3_5Config, prefix: str = CAUSAL_LM_PREFIX, fused_experts: bool = False) -> list[Entry]:
    """Every HF tensor of a model with this config under ``prefix``, in checkpoint order."""
    def wanted(cond: str, i: int | None) -> bool:
        if i is None:
            return cond == "always" or (cond == "untied" and not config.tie_word_embeddings)
        return {"layer": True, "linear_attention": config.layer_types[i] == "linear_attention",
                "full_attention": config.layer_types[i] == "full_attention", "dense_mlp": not config.is_moe,
                "moe": config.is_moe, "expert": config.is_moe and not fused_experts,
                "fused_expert": config.is_moe and fused_experts}[cond]

    return checkpoint.expand(MAPPING, wanted, config.num_hidden_layers, config.num_experts, p=prefix)


def checkpoint_layout(keys) -> tuple[str, bool]:
    """``(prefix, fused_experts)`` of a checkpoint from its tensor names."""
    keys = list(keys)
    prefix = CONDITIONAL_PREFIX if any(k.startswith(CONDITIONAL_PREFIX + ".") for k in keys) else CAUSAL_LM_PREFIX
    return prefix, any(k.endswith("mlp.experts.gate_up_proj") for k in keys)


# ---------------------------------------------------------------------------------------- shapes / sharding
def abstract_params(config: Qwen3_5Config, param_dtype=jnp.float32) -> dict:
    """Parameter tree of ``jax.ShapeDtypeStruct`` (no memory allocated)."""
    return checkpoint.abstract_params_of(Qwen3_5ForCausalLM(config, dtype=param_dtype, param_dtype=param_dtype))


def count_params(config: Qwen3_5Config) -> dict[str, int]:
    """``total``, ``non_embedding`` and ``activated`` parameters of the text model (as Qwen3's count_params)."""
    return _count(config, abstract_params(config))


# Gated DeltaNet and shared-expert rules first, then Qwen3's (attention, MLP, experts, embeddings, catch-all);
# logical axes as in Qwen3's table.
PARTITION_RULES: tuple[tuple[str, LogicalAxes], ...] = (
    (r"linear_attn/in_proj_(qkv|z)/kernel$", ("embed", "heads")),  # [D, C] / [D, nv*dv]
    (r"linear_attn/in_proj_(a|b)/kernel$", ("embed", None)),  # [D, nv]
    (r"linear_attn/conv1d/kernel$", (None, "heads")),  # [Kc, C]
    (r"linear_attn/out_proj/kernel$", ("heads", "embed")),  # [nv*dv, D]
    (r"shared_expert_gate/kernel$", ("embed", None)),  # [D, 1]
) + QWEN3_RULES


def partition_spec(path: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh,
                   rules: Mapping[str, str | None] | None = None) -> P:
    """The spec of the parameter at ``path`` by ``PARTITION_RULES`` and ``rules`` (None: the default table)."""
    return checkpoint.partition_spec(PARTITION_RULES, path, shape, mesh, rules)


def param_shardings(abstract: dict, mesh: Mesh, rules: Mapping[str, str | None] | None = None) -> dict:
    """NamedSharding per parameter for ``mesh`` (axes among 'data', 'model'), by ``PARTITION_RULES`` and
    ``rules`` (logical -> mesh axes)."""
    return checkpoint.param_shardings(PARTITION_RULES, abstract, mesh, rules)


# ---------------------------------------------------------------------------------------- loading / saving
def load_hf(path: str | os.PathLike, *, param_dtype=jnp.float32, mesh: Mesh | None = None,
            rules: Mapping[str, str | None] | None = None) -> tuple[Qwen3_5Config, dict]:
    """Load ``config.json`` + safetensors from a local HF directory (either layout) -> ``(config, params)``.

    Parameters are cast to ``param_dtype``; with ``mesh`` each is created sharded by ``PARTITION_RULES`` and
    ``rules`` (logical -> mesh axes)."""
    path = os.fspath(path)
    config = Qwen3_5Config.from_hf(path)
    files = checkpoint.checkpoint_files(path)
    prefix, fused = checkpoint_layout(files)
    entries = expand_mapping(config, prefix, fused)
    abstract = abstract_params(config, param_dtype)
    checkpoint.check_checkpoint(entries, {k: f.shape(k) for k, f in files.items()}, abstract,
                                lambda key: bool(_IGNORED.search(key)) or (config.tie_word_embeddings
                                                                           and key == "lm_head.weight"))
    return config, checkpoint.load_params(entries, files, abstract, PARTITION_RULES, mesh, rules)


def save_hf(params: dict, config: Qwen3_5Config, out_dir: str | os.PathLike, *, tokenizer=None,
            dtype=None, max_shard_bytes: int = 4 << 30) -> None:
    """Write a ``Qwen3_5ForCausalLM`` HF directory (text config, ``model.layers...``, experts per expert) that
    ``transformers`` loads; sharded with an index above ``max_shard_bytes``; atomic."""
    check_flax_params(config, params)
    checkpoint.write_hf_dir(checkpoint.hf_tensors(expand_mapping(config), params, dtype), out_dir, config.save_hf,
                            tokenizer=tokenizer, max_shard_bytes=max_shard_bytes)


def init_params(config: Qwen3_5Config, seed: int = 0, param_dtype=jnp.float32) -> dict:
    """Random parameters as ``transformers`` initialises them (normal matrices, zero-centred norms at 0, gated
    norms at 1, ``dt_bias`` 1, ``A_log = log(uniform(0.01, 16))``)."""
    return checkpoint.init_params_of(Qwen3_5ForCausalLM(config, dtype=param_dtype, param_dtype=param_dtype), seed)


def check_flax_params(config: Qwen3_5Config, params: Any) -> None:
    """Raise one UserError if ``params`` (arrays or ShapeDtypeStructs) do not match ``config``."""
    checkpoint.check_flax_params(abstract_params(config), params)
