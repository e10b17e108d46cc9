"""HF checkpoint <-> Flax params: one mapping table used for loading and for saving.

``MAPPING`` lists every tensor of a Qwen3 / Qwen3-MoE checkpoint as ``(HF key template, Flax path
template, layout, condition)``. Templates use ``{i}`` for the layer and ``{e}`` for the expert;
``expand_mapping(config)`` turns the table into the concrete entries of one model. Layout ``"linear"``
means the torch ``nn.Linear.weight [out, in]`` is the transpose of the Flax kernel ``[in, out]``;
``"copy"`` means identical layout. Expert weights are stacked in Flax (``experts/gate_proj [E, D, I]``)
and stored one tensor per expert in HF (``mlp.experts.{e}.gate_proj.weight [I, D]``).

Loading builds the parameter shapes with ``jax.eval_shape`` and creates each parameter directly with
its final sharding through ``jax.make_array_from_callback``: every device reads only its own slice from
the memory-mapped safetensors files, so the whole model is never materialised on one device.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.models.qwen3.config import Qwen3Config
from qwen_sae_jax.models.qwen3.modeling import Qwen3ForCausalLM
from qwen_sae_jax.models.qwen3.safetensors_io import SafetensorsFile, save_file

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


@dataclass(frozen=True)
class Entry:
    """One HF tensor: where it lives in the Flax tree and how it is laid out there."""

    hf_key: str
    flax_path: tuple[str, ...]
    transpose: bool  # HF tensor is the transpose of the Flax (per-expert) kernel
    expert: int | None  # index along axis 0 of a stacked Flax expert tensor


def expand_mapping(config: Qwen3Config) -> list[Entry]:
    """Every HF tensor of a model with this config, in checkpoint order."""
    entries = []
    for hf_t, flax_t, layout, cond in MAPPING:
        if cond == "always" or (cond == "untied" and not config.tie_word_embeddings):
            entries.append(Entry(hf_t, tuple(flax_t.split("/")), layout == "linear", None))
            continue
        if cond == "untied":
            continue
        for i in range(config.num_hidden_layers):
            dense = config.is_dense_mlp(i)
            wanted = {"layer": True, "attention_bias": config.attention_bias, "dense_mlp": dense,
                      "moe": not dense, "expert": not dense}[cond]
            if not wanted:
                continue
            experts = range(config.num_experts) if cond == "expert" else [None]
            for e in experts:
                entries.append(Entry(hf_t.format(i=i, e=e), tuple(flax_t.format(i=i).split("/")),
                                     layout == "linear", e))
    return entries


# ---------------------------------------------------------------------------------------- shapes / sharding
def abstract_params(config: Qwen3Config, param_dtype=jnp.float32) -> dict:
    """Parameter tree of ``jax.ShapeDtypeStruct`` (no memory allocated)."""
    model = Qwen3ForCausalLM(config, dtype=param_dtype, param_dtype=param_dtype)
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    return jax.eval_shape(lambda k, x: model.init(k, x), jax.random.key(0), ids)["params"]


def count_params(config: Qwen3Config) -> dict[str, int]:
    """``total``, ``non_embedding`` (total minus the input embedding and untied LM head, the model-card
    convention) and ``activated`` (per token: experts not chosen by the router excluded)."""
    flat = traverse_util.flatten_dict(abstract_params(config))
    total = sum(int(np.prod(v.shape)) for v in flat.values())
    embedding = config.vocab_size * config.hidden_size * (1 if config.tie_word_embeddings else 2)
    inactive = 0
    for path, v in flat.items():
        if "experts" in path:
            inactive += int(np.prod(v.shape)) // config.num_experts * (config.num_experts - config.num_experts_per_tok)
    return {"total": total, "non_embedding": total - embedding, "activated": total - inactive}


# Flax path regex -> PartitionSpec over mesh axes 'data' (FSDP) and 'model' (tensor/expert parallel).
PARTITION_RULES: tuple[tuple[str, P], ...] = (
    (r"embed_tokens/embedding$", P("model", "data")),  # [V, D]
    (r"self_attn/(q|k|v)_proj/kernel$", P("data", "model")),  # [D, N*hd]
    (r"self_attn/(q|k|v)_proj/bias$", P("model")),
    (r"self_attn/o_proj/kernel$", P("model", "data")),  # [H*hd, D]
    (r"mlp/(gate|up)_proj/kernel$", P("data", "model")),  # [D, I]
    (r"mlp/down_proj/kernel$", P("model", "data")),  # [I, D]
    (r"mlp/gate/kernel$", P("data", None)),  # router [D, E]
    (r"experts/(gate|up)_proj$", P("model", "data", None)),  # [E, D, I]
    (r"experts/down_proj$", P("model", None, "data")),  # [E, I, D]
    (r"lm_head/kernel$", P("data", "model")),  # [D, V]
    (r".*", P()),  # norms, biases of o_proj: replicated
)


def partition_spec(path: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh) -> P:
    """The rule's spec for ``path``, with an axis dropped (replicated) where it does not divide the dim."""
    name = "/".join(path)
    spec = next(s for pattern, s in PARTITION_RULES if re.search(pattern, name))
    fitted = []
    for dim, axis in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        fitted.append(axis if axis is not None and axis in mesh.shape and dim % mesh.shape[axis] == 0 else None)
    return P(*fitted)


def param_shardings(abstract: dict, mesh: Mesh) -> dict:
    """NamedSharding per parameter for ``mesh`` (axes among 'data', 'model')."""
    flat = traverse_util.flatten_dict(abstract)
    return traverse_util.unflatten_dict(
        {p: NamedSharding(mesh, partition_spec(p, v.shape, mesh)) for p, v in flat.items()})


# ---------------------------------------------------------------------------------------- loading
def _checkpoint_files(path: str) -> dict[str, SafetensorsFile]:
    """HF key -> open file, from ``model.safetensors`` or ``model.safetensors.index.json``."""
    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = {name: SafetensorsFile(os.path.join(path, name)) for name in sorted(set(weight_map.values()))}
        return {key: files[name] for key, name in weight_map.items()}
    if os.path.isfile(single):
        file = SafetensorsFile(single)
        return {key: file for key in file.keys()}
    found = sorted(os.listdir(path)) if os.path.isdir(path) else []
    raise UserError(f"no model.safetensors or model.safetensors.index.json in {path} (found: {found})")


def _hf_shape(entry: Entry, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = flax_shape[1:] if entry.expert is not None else flax_shape
    return tuple(reversed(shape)) if entry.transpose else tuple(shape)


def check_checkpoint(config: Qwen3Config, hf_shapes: dict[str, tuple[int, ...]], abstract: dict) -> None:
    """Raise one UserError listing every missing key, unexpected key and wrong shape."""
    flat = traverse_util.flatten_dict(abstract)
    entries = expand_mapping(config)
    expected = {e.hf_key: _hf_shape(e, flat[e.flax_path].shape) for e in entries}
    missing = [k for k in expected if k not in hf_shapes]
    extra = [k for k in hf_shapes if k not in expected
             and not (config.tie_word_embeddings and k in _IGNORED_WHEN_TIED)
             and not any(p.match(k) for p in _IGNORED_PATTERNS)]
    wrong = [f"{k}: {tuple(hf_shapes[k])} (expected {v})" for k, v in expected.items()
             if k in hf_shapes and tuple(hf_shapes[k]) != v]
    problems = [f"{label} ({len(items)}): {_listing(items, sep)}" for label, items, sep in
                (("missing keys", missing, ", "), ("unexpected keys", extra, ", "), ("wrong shapes", wrong, "; "))
                if items]
    if problems:
        raise UserError("checkpoint does not match its config.json: " + " | ".join(problems))


def _listing(items: list[str], sep: str, limit: int = 40) -> str:
    shown = sep.join(items[:limit])
    return shown + (f"{sep}... (+{len(items) - limit} more)" if len(items) > limit else "")


def load_hf(path: str | os.PathLike, *, param_dtype=jnp.float32, mesh: Mesh | None = None
            ) -> tuple[Qwen3Config, dict]:
    """Load ``config.json`` + safetensors from a local HF directory -> ``(config, params)``.

    Parameters are cast to ``param_dtype``. With ``mesh`` each parameter is created sharded by
    ``PARTITION_RULES`` (every device reads only its slice); without, on the default device.
    """
    path = os.fspath(path)
    config = Qwen3Config.from_hf(path)
    files = _checkpoint_files(path)
    abstract = abstract_params(config, param_dtype)
    check_checkpoint(config, {k: f.shape(k) for k, f in files.items()}, abstract)

    flat_abstract = traverse_util.flatten_dict(abstract)
    by_path: dict[tuple[str, ...], list[Entry]] = {}
    for entry in expand_mapping(config):
        by_path.setdefault(entry.flax_path, []).append(entry)

    if mesh is None:
        device = jax.devices()[0]
        shardings = {p: jax.sharding.SingleDeviceSharding(device) for p in flat_abstract}
    else:
        shardings = traverse_util.flatten_dict(param_shardings(abstract, mesh))

    flat_params = {}
    for flax_path, entries in by_path.items():
        aval = flat_abstract[flax_path]
        read = _slice_reader(entries, files, aval.dtype)
        flat_params[flax_path] = jax.make_array_from_callback(aval.shape, shardings[flax_path], read)
    return config, traverse_util.unflatten_dict(flat_params)


def _slice_reader(entries: list[Entry], files: dict[str, SafetensorsFile], dtype) -> Callable:
    """Callback ``index (tuple of slices in Flax layout) -> np.ndarray`` reading only that slice."""
    np_dtype = np.dtype(dtype)

    def read_one(entry: Entry, index: tuple[slice, ...]) -> np.ndarray:
        tensor = files[entry.hf_key].get(entry.hf_key)
        if entry.transpose:
            return np.asarray(tensor[tuple(reversed(index))]).T
        return np.asarray(tensor[index])

    def read(index: tuple[slice, ...]) -> np.ndarray:
        if entries[0].expert is None:
            out = read_one(entries[0], tuple(index))
        else:  # stacked experts: axis 0 picks experts, the rest slices each expert's tensor
            picked = range(len(entries))[index[0]]
            out = np.stack([read_one(entries[e], tuple(index[1:])) for e in picked])
        return out.astype(np_dtype)

    return read


# ---------------------------------------------------------------------------------------- saving
def save_hf(params: dict, config: Qwen3Config, out_dir: str | os.PathLike, *, tokenizer=None,
            dtype=None, max_shard_bytes: int = 4 << 30) -> None:
    """Write an HF directory (``config.json`` + safetensors, sharded with an index above
    ``max_shard_bytes``) that ``transformers`` loads. Tensors keep their dtype unless ``dtype`` is given.
    The directory is written next to ``out_dir`` and renamed into place (atomic)."""
    out_dir = os.fspath(out_dir)
    flat = traverse_util.flatten_dict(params)
    abstract = {p: jax.ShapeDtypeStruct(v.shape, v.dtype) for p, v in flat.items()}
    check_flax_params(config, traverse_util.unflatten_dict(abstract))

    tensors: dict[str, np.ndarray] = {}
    host_cache: dict[tuple[str, ...], np.ndarray] = {}
    for entry in expand_mapping(config):
        if entry.flax_path not in host_cache:
            host_cache[entry.flax_path] = np.asarray(jax.device_get(flat[entry.flax_path]))
        value = host_cache[entry.flax_path]
        if entry.expert is not None:
            value = value[entry.expert]
        value = value.T if entry.transpose else value
        tensors[entry.hf_key] = np.ascontiguousarray(value.astype(np.dtype(dtype)) if dtype else value)

    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(out_dir), dir=parent)
    try:
        shards: list[dict[str, np.ndarray]] = [{}]
        size = 0
        for key, value in tensors.items():
            if shards[-1] and size + value.nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][key] = value
            size += value.nbytes
        if len(shards) == 1:
            save_file(shards[0], os.path.join(tmp, "model.safetensors"))
        else:
            weight_map = {}
            for n, shard in enumerate(shards, 1):
                name = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, os.path.join(tmp, name))
                weight_map.update({k: name for k in shard})
            index = {"metadata": {"total_size": int(sum(v.nbytes for v in tensors.values()))},
                     "weight_map": weight_map}
            with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
                json.dump(index, f, indent=2)
        config.save_hf(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_flax_params(config: Qwen3Config, params: Any) -> None:
    """Raise one UserError if ``params`` (arrays or ShapeDtypeStructs) do not match ``config``."""
    want = {p: v.shape for p, v in traverse_util.flatten_dict(abstract_params(config)).items()}
    have = {p: tuple(v.shape) for p, v in traverse_util.flatten_dict(params).items()}
    missing = ["/".join(p) for p in want if p not in have]
    extra = ["/".join(p) for p in have if p not in want]
    wrong = [f"{'/'.join(p)}: {have[p]} (expected {s})" for p, s in want.items() if p in have and have[p] != s]
    problems = [f"{label} ({len(x)}): {_listing(x, ', ')}" for label, x in
                (("missing", missing), ("unexpected", extra), ("wrong shapes", wrong)) if x]
    if problems:
        raise UserError("params do not match the config: " + " | ".join(problems))


def init_params(config: Qwen3Config, seed: int = 0, param_dtype=jnp.float32) -> dict:
    """Random parameters (normal(initializer_range) matrices, unit norms), as ``transformers`` initialises."""
    model = Qwen3ForCausalLM(config, dtype=param_dtype, param_dtype=param_dtype)
    return jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 1), jnp.int32))["params"]
