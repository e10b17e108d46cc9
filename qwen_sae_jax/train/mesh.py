"""The device mesh ``('data', 'model')`` and the partition rules of the training state.

Rules name logical axes (``batch``, ``latent``); ``MeshConfig.rules`` maps them to mesh axes
(``qwen_sae_jax.sharding``; by default ``batch`` -> ``data``, ``latent`` -> ``model``):

* activations: the row axis is ``batch`` (``[H, rows, D]`` -> ``P(None, 'data', None)`` by default),
* each SAE: its latent dimension is ``latent``: encoder columns, decoder rows, per-latent vectors;
  ``b_dec`` and ``act_scale`` are replicated. Stacked group parameters carry a leading (unsharded) axis.
* optimizer moments follow their parameter (the rule is chosen by the leaf's field name), counters are
  replicated; dead-latent counters ``[n, d_sae]`` follow ``b_enc``.
* the language model's own parameters are placed by ``load_model(mesh=..., rules=...)`` from the same table
  (each family's ``params.PARTITION_RULES``; FSDP over ``data`` by default).

The same config runs on 1 or N devices: every array is a global array and every operation is written
on global shapes, so the devices only change where the work happens, not what is computed.
"""
from __future__ import annotations

from typing import Mapping

import jax
import numpy as np
from jax.sharding import AbstractMesh, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.sharding import LogicalAxes, check_rules, logical_sharding
from qwen_sae_jax.train.config import MeshConfig

# field name -> logical axes of the *stacked* leaf ([n, ...])
SAE_RULES: dict[str, LogicalAxes] = {
    "W_enc": (None, None, "latent"),      # [n, d_in, d_sae]
    "b_enc": (None, "latent"),            # [n, d_sae]
    "W_dec": (None, "latent", None),      # [n, d_sae, d_in]
    "b_dec": (None, None),                # [n, d_in]
    "threshold": (None, "latent"),        # [n, d_sae]
    "act_scale": (None,),                 # [n]
    "tokens_since_fired": (None, "latent"),  # [n, d_sae]
}


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
    """``Mesh(devices.reshape(data, model), ('data', 'model'))``: all (global) devices with ``data=-1``,
    else the first ``data * model`` of them (so one config can be run on fewer devices for comparison)."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    n = devices.size
    model = cfg.model
    if model < 1 or n % model:
        raise UserError(f"mesh.model={model} must divide the number of devices ({n})")
    data = n // model if cfg.data == -1 else cfg.data
    if data < 1 or data * model > n:
        raise UserError(f"mesh.data x mesh.model = {cfg.data} x {model} needs more than the {n} device(s); "
                        f"set mesh.data=-1 (all devices) or data * model <= {n}")
    if data * model < n and jax.process_count() > 1:
        raise UserError(f"mesh.data x mesh.model = {data} x {model} must use all {n} devices of a multi-process job")
    return Mesh(devices[:data * model].reshape(data, model), ("data", "model"))


def process_batch_rows(mesh: Mesh, batch_size: int) -> range:
    """The rows of a ``[batch_size, ...]`` batch sharded over 'data' that this process's devices hold: what it
    must load itself (``jax.make_array_from_process_local_data``). Processes split the rows when the 'data' axis
    spans them; when the 'model' axis spans processes, those processes hold (and load) the same rows."""
    index = NamedSharding(mesh, P("data")).addressable_devices_indices_map((batch_size,))
    held = {r for index_of in index.values() if index_of is not None for r in range(*index_of[0].indices(batch_size))}
    first, last = min(held), max(held)
    if len(held) != last - first + 1:
        raise UserError(f"this process's devices hold rows {sorted(held)} of the data axis, not one block; "
                        "order the mesh devices by process")
    return range(first, last + 1)


def _leaf_name(path) -> str | None:
    for entry in reversed(path):
        name = getattr(entry, "name", None) or getattr(entry, "key", None)
        if isinstance(name, str):
            return name
    return None


def state_shardings(tree, mesh: Mesh | AbstractMesh, rules: Mapping[str, str | None] | None = None):
    """NamedSharding per leaf of a training-state tree, by the leaf's field name (stacked [n, ...] leaves, or
    a single-hook group's unstacked ones); logical axes mapped by ``rules`` (None: the default table)."""
    rules = check_rules(rules)

    def rule(path, leaf):
        axes = SAE_RULES.get(_leaf_name(path))
        if axes is not None and len(axes) == np.ndim(leaf) + 1:
            axes = axes[1:]     # a single-hook group's unstacked leaf
        if axes is None or len(axes) != np.ndim(leaf):
            axes = ()
        return logical_sharding(axes, np.shape(leaf), mesh, rules)
    return jax.tree_util.tree_map_with_path(rule, tree)


def activation_sharding(mesh: Mesh, shape: tuple[int, int, int],
                        rules: Mapping[str, str | None] | None = None) -> NamedSharding:
    """[H, rows, D] activations: rows by the ``batch`` rule (over 'data' by default, when they divide)."""
    return logical_sharding((None, "batch", None), shape, mesh, rules)
