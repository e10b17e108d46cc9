"""HF checkpoint <-> Flax params of Qwen3 / Qwen3-MoE: one mapping table used for loading and for saving.

``MAPPING`` lists every tensor of a Qwen3 / Qwen3-MoE checkpoint as ``(HF key template, Flax path
template, layout, condition)``. Templates use ``{i}`` for the layer and ``{e}`` for the expert;
``expand_mapping(config)`` turns the table into the concrete entries of one model. Layouts are those of
``models.checkpoint`` (``"linear"``: the torch ``nn.Linear.weight [out, in]`` is the transpose of the Flax
kernel ``[in, out]``; ``"copy"``: identical). Expert weights are stacked in Flax (``experts/gate_proj
[E, D, I]``) and stored one tensor per expert in HF (``mlp.experts.{e}.gate_proj.weight [I, D]``).

Loading builds the parameter shapes with ``jax.eval_shape`` and creates each parameter directly with
its final sharding (``models.checkpoint.load_params``): every device reads only its own slice from the
memory-mapped safetensors files, so the whole model is never materialised on one device.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from qwen_sae_jax.models import checkpoint
from qwen_sae_jax.models.checkpoint import Entry
from qwen_sae_jax.models.qwen3.config import Qwen3Config
from qwen_sae_jax.models.qwen3.modeling import Qwen3ForCausalLM
from qwen_sae_jax.sharding import LogicalAxes

# (HF key template, Flax path template, layout, condition)
MAPPING: tuple[tuple[str, str, str, str], ...] = (
    ("model.embed_tokens.weight", "model/embed_tokens/embedding", "copy", "always"),
    ("model.layers.{i}.input_layernorm.weight", "model/layers_{i}/input_layernorm/weight", "copy", "layer"),
    ("model.layers.{i}.post_attention_layernorm.weight", "model/layers_{i}/post_attention_layernorm/weight",
     "copy", "layer"),
    ("model.layers.{i}.self_attn.q_proj.weight", "model/layers_{i}/self_attn/q_proj/kernel", "linear", "layer"),
    ("model.layers.{i}.self_attn.k_proj.weight", "model/layers_{i}/self_attn/k_proj/kernel", "linear", "layer"),
    ("model.layers.{i}.self_attn.v_proj.weight", "model/layers_{i}/self_attn/v_proj/kernel", "linear", "layer"),
    ("model.layers.{i}.self_attn.o_proj.weight", "model/layers_{i}/self_attn/o_proj/kernel", "linear", "layer"),
    ("model.layers.{i}.self_attn.q_proj.bias", "model/layers_{i}/self_attn/q_proj/bias", "copy", "attention_bias"),
    ("model.layers.{i}.self_attn.k_proj.bias", "model/layers_{i}/self_attn/k_proj/bias", "copy", "attention_bias"),
    ("model.layers.{i}.self_attn.v_proj.bias", "model/layers_{i}/self_attn/v_proj/bias", "copy", "attention_bias"),
    ("model.layers.{i}.self_attn.o_proj.bias", "model/layers_{i}/self_attn/o_proj/bias", "copy", "attention_bias"),
    ("model.layers.{i}.self_attn.q_norm.weight", "model/layers_{i}/self_attn/q_norm/weight", "copy", "layer"),
    ("model.layers.{i}.self_attn.k_norm.weight", "model/layers_{i}/self_attn/k_norm/weight", "copy", "layer"),
    ("model.layers.{i}.mlp.gate_proj.weight", "model/layers_{i}/mlp/gate_proj/kernel", "linear", "dense_mlp"),
    ("model.layers.{i}.mlp.up_proj.weight", "model/layers_{i}/mlp/up_proj/kernel", "linear", "dense_mlp"),
    ("model.layers.{i}.mlp.down_proj.weight", "model/layers_{i}/mlp/down_proj/kernel", "linear", "dense_mlp"),
    ("model.layers.{i}.mlp.gate.weight", "model/layers_{i}/mlp/gate/kernel", "linear", "moe"),
    ("model.layers.{i}.mlp.experts.{e}.gate_proj.weight", "model/layers_{i}/mlp/experts/gate_proj", "linear", "expert"),
    ("model.layers.{i}.mlp.experts.{e}.up_proj.weight", "model/layers_{i}/mlp/experts/up_proj", "linear", "expert"),
    ("model.layers.{i}.mlp.experts.{e}.down_proj.weight", "model/layers_{i}/mlp/experts/down_proj", "linear", "expert"),
    ("model.norm.weight", "model/norm/weight", "copy", "always"),
    ("lm_head.weight", "lm_head/kernel", "linear", "untied"),
)

# HF keys that may be present but are not parameters of ours (tied head saved anyway, rotary buffers)
_IGNORED_WHEN_TIED = ("lm_head.weight",)
_IGNORED_PATTERNS = (re.compile(r".*rotary_emb\.inv_freq$"),)


def expand_mapping(config: Qwen3Config) -> list[Entry]:
    """Every HF tensor of a model with this config, in checkpoint order."""
    def wanted(cond: str, i: int | None) -> bool:
        if i is None:
            return cond == "always" or (cond == "untied" and not config.tie_word_embeddings)
        dense = config.is_dense_mlp(i)
        return {"layer": True, "attention_bias": config.attention_bias, "dense_mlp": dense,
                "moe": not dense, "expert": not dense}[cond]

    return checkpoint.expand(MAPPING, wanted, config.num_hidden_layers, config.num_experts)


# ---------------------------------------------------------------------------------------- shapes / sharding
def abstract_params(config: Qwen3Config, param_dtype=jnp.float32) -> dict:
    """Parameter tree of ``jax.ShapeDtypeStruct`` (no memory allocated)."""
    return checkpoint.abstract_params_of(Qwen3ForCausalLM(config, dtype=param_dtype, param_dtype=param_dtype))


def count_params(config, abstract: dict | None = None) -> dict[str, int]:
    """``total``, ``non_embedding`` (total minus the input embedding and untied LM head, the model-card
    convention) and ``activated`` (per token: experts not chosen by the router excluded). Works for any
    family's config given its ``abstract`` params (default: this family's)."""
    flat = traverse_util.flatten_dict(abstract_params(config) if abstract is None else abstract)
    total = sum(int(np.prod(v.shape)) for v in flat.values())
    embedding = config.vocab_size * config.hidden_size * (1 if config.tie_word_embeddings else 2)
    inactive = 0
    for path, v in flat.items():
        if "experts" in path:
            inactive += int(np.prod(v.shape)) // config.num_experts * (config.num_experts - config.num_experts_per_tok)
    return {"total": total, "non_embedding": total - embedding, "activated": total - inactive}


# Flax path regex -> logical axis per dimension (the first match applies); ``sharding.DEFAULT_RULES`` puts
# embed on 'data' (FSDP) and vocab / heads / kv_heads / mlp / expert on 'model' (tensor / expert parallel).
PARTITION_RULES: tuple[tuple[str, LogicalAxes], ...] = (
    (r"embed_tokens/embedding$", ("vocab", "embed")),  # [V, D]
    (r"self_attn/q_proj/kernel$", ("embed", "heads")),  # [D, N*hd]
    (r"self_attn/(k|v)_proj/kernel$", ("embed", "kv_heads")),  # [D, K*hd]
    (r"self_attn/q_proj/bias$", ("heads",)),
    (r"self_attn/(k|v)_proj/bias$", ("kv_heads",)),
    (r"self_attn/o_proj/kernel$", ("heads", "embed")),  # [N*hd, D]
    (r"(gate|up)_proj/kernel$", ("embed", "mlp")),  # [D, I] (dense MLP, shared expert)
    (r"down_proj/kernel$", ("mlp", "embed")),  # [I, D]
    (r"mlp/gate/kernel$", ("embed", None)),  # router [D, E]
    (r"experts/(gate|up)_proj$", ("expert", "embed", "mlp")),  # [E, D, I]
    (r"experts/down_proj$", ("expert", "mlp", "embed")),  # [E, I, D]
    (r"lm_head/kernel$", ("embed", "vocab")),  # [D, V]
    (r".*", ()),  # norms, biases of o_proj: replicated
)


def partition_spec(path: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh,
                   rules: Mapping[str, str | None] | None = None) -> P:
    """The spec of the parameter at ``path``: its logical axes mapped to ``mesh`` by ``rules`` (None: the
    default table), an axis dropped (replicated) where it does not divide the dim."""
    return checkpoint.partition_spec(PARTITION_RULES, path, shape, mesh, rules)


def param_shardings(abstract: dict, mesh: Mesh, rules: Mapping[str, str | None] | None = None) -> dict:
    """NamedSharding per parameter for ``mesh`` (axes among 'data', 'model'), logical axes mapped by ``rules``."""
    return checkpoint.param_shardings(PARTITION_RULES, abstract, mesh, rules)


# ---------------------------------------------------------------------------------------- loading
def _ignored(config: Qwen3Config, key: str) -> bool:
    return (config.tie_word_embeddings and key in _IGNORED_WHEN_TIED) or any(p.match(key) for p in _IGNORED_PATTERNS)


def load_hf(path: str | os.PathLike, *, param_dtype=jnp.float32, mesh: Mesh | None = None,
            rules: Mapping[str, str | None] | None = None) -> tuple[Qwen3Config, dict]:
    """Load ``config.json`` + safetensors from a local HF directory -> ``(config, params)``.

    Parameters are cast to ``param_dtype``. With ``mesh`` each parameter is created sharded by
    ``PARTITION_RULES`` and ``rules`` (logical -> mesh axes; every device reads only its slice); without, on
    the default device.
    """
    path = os.fspath(path)
    config = Qwen3Config.from_hf(path)
    files = checkpoint.checkpoint_files(path)
    abstract = abstract_params(config, param_dtype)
    entries = expand_mapping(config)
    checkpoint.check_checkpoint(entries, {k: f.shape(k) for k, f in files.items()}, abstract,
                                lambda key: _ignored(config, key))
    return config, checkpoint.load_params(entries, files, abstract, PARTITION_RULES, mesh, rules)


# ---------------------------------------------------------------------------------------- saving
def save_hf(params: dict, config: Qwen3Config, out_dir: str | os.PathLike, *, tokenizer=None,
            dtype=None, max_shard_bytes: int = 4 << 30) -> None:
    """Write an HF directory (``config.json`` + safetensors, sharded with an index above
    ``max_shard_bytes``) that ``transformers`` loads. Tensors keep their dtype unless ``dtype`` is given.
    The directory is written next to ``out_dir`` and renamed into place (atomic)."""
    check_flax_params(config, params)
    checkpoint.write_hf_dir(checkpoint.hf_tensors(expand_mapping(config), params, dtype), out_dir, config.save_hf,
                            tokenizer=tokenizer, max_shard_bytes=max_shard_bytes)


def check_flax_params(config: Qwen3Config, params: Any) -> None:
    """Raise one UserError if ``params`` (arrays or ShapeDtypeStructs) do not match ``config``."""
    checkpoint.check_flax_params(abstract_params(config), params)


def init_params(config: Qwen3Config, seed: int = 0, param_dtype=jnp.float32) -> dict:
    """Random parameters (normal(initializer_range) matrices, unit norms), as ``transformers`` initialises."""
    return checkpoint.init_params_of(Qwen3ForCausalLM(config, dtype=param_dtype, param_dtype=param_dtype), seed)
