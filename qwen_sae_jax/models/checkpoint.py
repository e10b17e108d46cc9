"""HF checkpoint <-> Flax params machinery shared by every model family (each family supplies its table).

A family describes its checkpoint as a list of ``Entry`` (one per HF tensor, or per expert of a stacked
Flax tensor): where the tensor lives in the Flax tree and its ``layout`` (how the HF tensor holds the Flax
array). This module checks a checkpoint against those entries (every missing, unexpected and wrong-shape
key reported in one error), creates each parameter directly with its final sharding through
``jax.make_array_from_callback`` (every device reads only its own slice from the memory-mapped safetensors
files, so the whole model is never materialised on one device), and writes HF directories.

Layouts (Flax shape -> HF shape):

    copy        identical                                      norms, embeddings, A_log
    linear      [in, out] -> [out, in]                         torch ``nn.Linear.weight``
    conv        [K, C] -> [C, 1, K]                            torch depthwise ``nn.Conv1d.weight``
    fused_gate  [E, D, I] -> [E, 2I, D], rows [0, I)           fused MoE ``gate_up_proj`` (gate rows first)
    fused_up    [E, D, I] -> [E, 2I, D], rows [I, 2I)
    fused_down  [E, I, D] -> [E, D, I]                         fused MoE ``down_proj``

An entry with ``expert = e`` maps one HF tensor to index ``e`` of axis 0 of a stacked Flax tensor (HF stores
one tensor per expert). The fused layouts are read-only: saving writes the per-expert form, as
``transformers`` does.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.safetensors_io import SafetensorsFile, save_file
from qwen_sae_jax.sharding import LogicalAxes, check_rules, logical_spec

Index = tuple  # tuple of slices, one per Flax axis


def _rows(index: slice, offset: int, size: int) -> slice:
    start, stop, _ = index.indices(size)
    return slice(offset + start, offset + stop)


def _fused_half(upper: bool) -> Callable:
    def read(t, index):  # t [E, 2I, D], index over Flax [E, D, I]
        half = t.shape[1] // 2
        return np.asarray(t[index[0], _rows(index[2], half if upper else 0, half), index[1]]).transpose(0, 2, 1)
    return read


@dataclass(frozen=True)
class Layout:
    """How an HF tensor holds a Flax array. ``read(hf_tensor, flax_index)`` returns that slice in Flax
    layout; ``to_hf(flax_array)`` the HF tensor (None: a load-only layout)."""

    hf_shape: Callable[[tuple[int, ...]], tuple[int, ...]]
    read: Callable[[np.ndarray, Index], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray] | None


LAYOUTS: dict[str, Layout] = {
    "copy": Layout(lambda s: tuple(s), lambda t, i: np.asarray(t[i]), lambda a: a),
    "linear": Layout(lambda s: tuple(reversed(s)), lambda t, i: np.asarray(t[tuple(reversed(i))]).T, lambda a: a.T),
    "conv": Layout(lambda s: (s[1], 1, s[0]), lambda t, i: np.asarray(t[i[1], 0, i[0]]).T,
                   lambda a: np.ascontiguousarray(a.T)[:, None, :]),
    "fused_gate": Layout(lambda s: (s[0], 2 * s[2], s[1]), _fused_half(False), None),
    "fused_up": Layout(lambda s: (s[0], 2 * s[2], s[1]), _fused_half(True), None),
    "fused_down": Layout(lambda s: (s[0], s[2], s[1]), lambda t, i: np.asarray(t[i[0], i[2], i[1]]).transpose(0, 2, 1),
                         None),
}


@dataclass(frozen=True)
class Entry:
    """One HF tensor: where it lives in the Flax tree and how it is laid out there."""

    hf_key: str
    flax_path: tuple[str, ...]
    layout: str  # a key of LAYOUTS
    expert: int | None = None  # index along axis 0 of a stacked Flax expert tensor

    def hf_shape(self, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
        return LAYOUTS[self.layout].hf_shape(flax_shape[1:] if self.expert is not None else flax_shape)


def expand(table: Iterable[tuple[str, str, str, str]], wanted: Callable[[str, int | None], bool],
           num_layers: int, num_experts: int, **fmt: str) -> list[Entry]:
    """Concrete entries from ``(HF key template, Flax path template, layout, condition)`` rows.

    Templates use ``{i}`` for the layer, ``{e}`` for the expert and any ``fmt`` field (e.g. ``{p}`` for a key
    prefix). ``wanted(condition, layer)`` says whether a row applies: called with ``layer=None`` for rows without
    ``{i}``, once per layer otherwise. Rows whose condition ends in ``expert`` repeat for every expert."""
    entries = []
    for hf_t, flax_t, layout, cond in table:
        layers = range(num_layers) if "{i}" in hf_t else [None]
        for i in layers:
            if not wanted(cond, i):
                continue
            experts = range(num_experts) if "{e}" in hf_t else [None]
            for e in experts:
                entries.append(Entry(hf_t.format(i=i, e=e, **fmt), tuple(flax_t.format(i=i).split("/")), layout, e))
    return entries


def abstract_params_of(module) -> dict:
    """Parameter tree of ``jax.ShapeDtypeStruct`` of a causal-LM ``module`` (nothing allocated)."""
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    return jax.eval_shape(lambda k, x: module.init(k, x), jax.random.key(0), ids)["params"]


def init_params_of(module, seed: int = 0) -> dict:
    """Random parameters of a causal-LM ``module`` (its initialisers, drawn from ``seed``)."""
    return jax.jit(module.init)(jax.random.key(seed), jnp.zeros((1, 1), jnp.int32))["params"]


# ---------------------------------------------------------------------------------------- sharding
# a family's partition table: (Flax path regex, logical axis per dimension); the first match applies
PartitionTable = Sequence[tuple[str, LogicalAxes]]


def logical_axes(table: PartitionTable, path: tuple[str, ...]) -> LogicalAxes:
    """The logical axes of the first row of ``table`` whose regex matches ``path`` (joined with '/')."""
    name = "/".join(path)
    for pattern, axes in table:
        if re.search(pattern, name):
            return axes
    raise ValueError(f"no partition rule matches {name}")  # every family's table ends with a catch-all


def partition_spec(table: PartitionTable, path: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh,
                   rules: Mapping[str, str | None] | None = None) -> P:
    """The spec of the parameter at ``path``: its logical axes (``table``) mapped to ``mesh`` by ``rules``
    (None: ``sharding.DEFAULT_RULES``); a mesh axis is dropped (replicated) where an earlier dimension took
    it or it does not divide the dimension (``sharding.logical_spec``)."""
    return logical_spec(logical_axes(table, path), shape, mesh, rules)


def param_shardings(table: PartitionTable, abstract: dict, mesh: Mesh,
                    rules: Mapping[str, str | None] | None = None) -> dict:
    """NamedSharding per parameter of ``abstract`` for ``mesh`` (axes among 'data', 'model')."""
    rules = check_rules(rules)
    flat = traverse_util.flatten_dict(abstract)
    return traverse_util.unflatten_dict(
        {p: NamedSharding(mesh, partition_spec(table, p, v.shape, mesh, rules)) for p, v in flat.items()})


# ---------------------------------------------------------------------------------------- loading
def checkpoint_files(path: str) -> dict[str, SafetensorsFile]:
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


def check_checkpoint(entries: Sequence[Entry], hf_shapes: Mapping[str, tuple[int, ...]], abstract: dict,
                     ignored: Callable[[str], bool]) -> None:
    """Raise one UserError listing every missing key, unexpected key (``ignored(key)`` false) and wrong shape."""
    flat = traverse_util.flatten_dict(abstract)
    expected = {e.hf_key: e.hf_shape(flat[e.flax_path].shape) for e in entries}
    missing = [k for k in expected if k not in hf_shapes]
    extra = [k for k in hf_shapes if k not in expected and not ignored(k)]
    wrong = [f"{k}: {tuple(hf_shapes[k])} (expected {v})" for k, v in expected.items()
             if k in hf_shapes and tuple(hf_shapes[k]) != v]
    problems = [f"{label} ({len(items)}): {listing(items, sep)}" for label, items, sep in
                (("missing keys", missing, ", "), ("unexpected keys", extra, ", "), ("wrong shapes", wrong, "; "))
                if items]
    if problems:
        raise UserError("checkpoint does not match its config.json: " + " | ".join(problems))


def listing(items: Sequence[str], sep: str, limit: int = 40) -> str:
    shown = sep.join(items[:limit])
    return shown + (f"{sep}... (+{len(items) - limit} more)" if len(items) > limit else "")


def load_params(entries: Sequence[Entry], files: Mapping[str, SafetensorsFile], abstract: dict,
                table: PartitionTable, mesh: Mesh | None, rules: Mapping[str, str | None] | None = None) -> dict:
    """The parameter tree of ``abstract`` filled from ``files``: sharded over ``mesh`` by ``table`` (logical
    axes) and ``rules`` (logical -> mesh axes; each device reads only its slice), or on the default device
    without a mesh. Call ``check_checkpoint`` first."""
    flat_abstract = traverse_util.flatten_dict(abstract)
    by_path: dict[tuple[str, ...], list[Entry]] = {}
    for entry in entries:
        by_path.setdefault(entry.flax_path, []).append(entry)
    if mesh is None:
        device = jax.devices()[0]
        shardings = {p: jax.sharding.SingleDeviceSharding(device) for p in flat_abstract}
    else:
        shardings = traverse_util.flatten_dict(param_shardings(table, abstract, mesh, rules))
    flat_params = {}
    for flax_path, group in by_path.items():
        aval = flat_abstract[flax_path]
        flat_params[flax_path] = jax.make_array_from_callback(aval.shape, shardings[flax_path],
                                                              _slice_reader(group, files, aval.dtype))
    return traverse_util.unflatten_dict(flat_params)


def _slice_reader(entries: Sequence[Entry], files: Mapping[str, SafetensorsFile], dtype) -> Callable:
    """Callback ``index (tuple of slices in Flax layout) -> np.ndarray`` reading only that slice."""
    np_dtype = np.dtype(dtype)

    def read_one(entry: Entry, index: Index) -> np.ndarray:
        return LAYOUTS[entry.layout].read(files[entry.hf_key].get(entry.hf_key), index)

    def read(index: Index) -> np.ndarray:
        index = tuple(index)
        if entries[0].expert is None:
            out = read_one(entries[0], index)
        else:  # stacked experts: axis 0 picks experts, the rest slices each expert's tensor
            picked = range(len(entries))[index[0]]
            out = np.stack([read_one(entries[e], index[1:]) for e in picked])
        return out.astype(np_dtype)

    return read


def check_flax_params(want: dict, params: Any) -> None:
    """Raise one UserError if ``params`` (arrays or ShapeDtypeStructs) do not have the shapes of ``want``."""
    want_shapes = {p: v.shape for p, v in traverse_util.flatten_dict(want).items()}
    have = {p: tuple(v.shape) for p, v in traverse_util.flatten_dict(params).items()}
    missing = ["/".join(p) for p in want_shapes if p not in have]
    extra = ["/".join(p) for p in have if p not in want_shapes]
    wrong = [f"{'/'.join(p)}: {have[p]} (expected {s})" for p, s in want_shapes.items() if p in have and have[p] != s]
    problems = [f"{label} ({len(x)}): {listing(x, ', ')}" for label, x in
                (("missing", missing), ("unexpected", extra), ("wrong shapes", wrong)) if x]
    if problems:
        raise UserError("params do not match the config: " + " | ".join(problems))


# ---------------------------------------------------------------------------------------- saving
def hf_tensors(entries: Sequence[Entry], params: dict, dtype=None) -> dict[str, np.ndarray]:
    """HF key -> host numpy tensor for every entry (``dtype``: cast, else keep each tensor's dtype)."""
    flat = traverse_util.flatten_dict(params)
    tensors: dict[str, np.ndarray] = {}
    host: dict[tuple[str, ...], np.ndarray] = {}
    for entry in entries:
        if entry.flax_path not in host:
            host[entry.flax_path] = np.asarray(jax.device_get(flat[entry.flax_path]))
        value = host[entry.flax_path]
        if entry.expert is not None:
            value = value[entry.expert]
        to_hf = LAYOUTS[entry.layout].to_hf
        assert to_hf is not None, f"layout {entry.layout} is load-only"  # the write tables use none
        value = to_hf(value)
        tensors[entry.hf_key] = np.ascontiguousarray(value.astype(np.dtype(dtype)) if dtype else value)
    return tensors


def write_hf_dir(tensors: Mapping[str, np.ndarray], out_dir: str | os.PathLike, write_config: Callable[[str], None],
                 *, tokenizer=None, max_shard_bytes: int = 4 << 30) -> None:
    """Write ``tensors`` as safetensors (sharded with an index above ``max_shard_bytes``), ``write_config(dir)``
    and the tokenizer into ``out_dir``. Written next to ``out_dir`` and renamed into place (atomic)."""
    out_dir = os.fspath(out_dir)
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
        write_config(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
