"""The device mesh ``('data', 'model')`` and the partition rules of the training state.

* activations: the batch / row axis over ``data`` (``[H, rows, D]`` -> ``P(None, 'data', None)``),
* each SAE: its latent dimension over ``model``: encoder columns, decoder rows, per-latent vectors;
  ``b_dec`` and ``act_scale`` are replicated. Stacked group parameters carry a leading (unsharded) axis.
* optimizer moments follow their parameter (the rule is chosen by the leaf's field name), counters are
  replicated; dead-latent counters ``[n, d_sae]`` follow ``b_enc``.
* the language model's own parameters are placed by ``load_model(mesh=...)`` (FSDP over ``data``).

The same config runs on 1 or N devices: every array is a global array and every operation is written
on global shapes, so the devices only change where the work happens, not what is computed.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.train.config import MeshConfig

# field name -> spec of the *stacked* leaf ([n, ...])
SAE_RULES = {
    "W_enc": P(None, None, "model"),      # [n, d_in, d_sae]
    "b_enc": P(None, "model"),            # [n, d_sae]
    "W_dec": P(None, "model", None),      # [n, d_sae, d_in]
    "b_dec": P(None, None),               # [n, d_in]
    "threshold": P(None, "model"),        # [n, d_sae]
    "act_scale": P(None),                 # [n]
    "tokens_since_fired": P(None, "model"),  # [n, d_sae]
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
    held = {r for (rows,) in index.values() for r in range(*rows.indices(batch_size))}
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


def state_shardings(tree, mesh: Mesh):
    """NamedSharding per leaf of a training-state tree, by the leaf's field name (stacked [n, ...] leaves, or
    a single-hook group's unstacked ones)."""
    def rule(path, leaf):
        spec = SAE_RULES.get(_leaf_name(path))
        if spec is not None and len(spec) == np.ndim(leaf) + 1:
            spec = P(*spec[1:])     # a single-hook group's unstacked leaf
        if spec is None or len(spec) != np.ndim(leaf):
            spec = P()
        return NamedSharding(mesh, spec)
    return jax.tree_util.tree_map_with_path(rule, tree)


def activation_sharding(mesh: Mesh) -> NamedSharding:
    """[H, rows, D] activations: rows over 'data'."""
    return NamedSharding(mesh, P(None, "data", None))
