"""The fused encoder+TopK kernel on an SAE whose latent dimension is split over the mesh axis ``model``.

A Pallas kernel is a custom call that XLA's SPMD partitioner cannot split: given ``W_enc`` sharded over
``model`` it would gather the whole encoder onto every device first. `model_sharded_topk` instead runs
the kernel per shard under `jax.shard_map` and merges the shards' candidates:

    per model shard m (its columns [m * d_local, (m + 1) * d_local) of W_enc / b_enc):
        vals_m, idx_m = fused_encoder_topk(x, W_enc[:, cols_m], b_enc[cols_m], min(k, d_local))
        idx_m += m * d_local                                        # global latent ids
    vals, idx = all_gather over 'model' of (vals_m, idx_m)          # [B_local, model * min(k, d_local)]
    acts, pos = lax.top_k(vals, k); idx = idx[pos]                  # the row's k best overall

which equals ``lax.top_k(relu(x @ W_enc + b_enc), k)`` (ties aside): a row's k best latents are among
the k best of each shard. Only ``B x model x k`` candidates cross devices, never the encoder. The batch
stays split over ``data`` (replicated if it does not divide).

The mesh comes from the tracing context (`jax.set_mesh`, which `train.step.Trainer` sets around its step),
so `select_topk`'s callers need no extra argument; `model_mesh()` reads it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from qwen_sae_jax.sae.kernels.topk import fused_encoder_topk


def model_mesh():
    """The context (abstract) mesh when it splits an axis named ``model`` over more than one device, else
    None (no mesh set, or nothing to split)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or "model" not in mesh.axis_names or mesh.shape["model"] <= 1:
        return None
    return mesh


def model_sharded_topk(x: jax.Array, W_enc: jax.Array, b_enc: jax.Array, k: int, mesh) -> tuple[jax.Array, jax.Array]:
    """`fused_encoder_topk` with W_enc [d_in, d_sae] / b_enc [d_sae] split over ``mesh``'s ``model`` axis:
    x [B, d_in] -> (acts [B, k] float32 sorted descending, idx [B, k] int32 global latent ids)."""
    n_model = mesh.shape["model"]
    d_sae = W_enc.shape[1]
    if d_sae % n_model:
        raise ValueError(f"d_sae={d_sae} is not divisible by the 'model' axis size {n_model}")
    d_local = d_sae // n_model
    k_local = min(k, d_local)
    n_data = mesh.shape.get("data", 1)
    batch_spec = "data" if "data" in mesh.axis_names and x.shape[0] % n_data == 0 else None

    def per_shard(x_l, w_l, b_l):  # x_l [B_l, d_in], w_l [d_in, d_local], b_l [d_local]
        vals, idx = fused_encoder_topk(x_l, w_l, b_l, k_local)  # [B_l, k_local]
        idx = idx + lax.axis_index("model") * d_local
        vals = lax.all_gather(vals, "model", axis=1, tiled=True)  # [B_l, model * k_local]
        idx = lax.all_gather(idx, "model", axis=1, tiled=True)
        vals, pos = lax.top_k(vals, k)  # [B_l, k]
        return vals, jnp.take_along_axis(idx, pos, axis=1)

    rows = P(batch_spec, None)
    return jax.shard_map(per_shard, mesh=mesh, in_specs=(rows, P(None, "model"), P("model")),
                         out_specs=(rows, rows), check_vma=False)(x, W_enc, b_enc)
