"""Top-k selection of encoder latents: ``relu(x_enc @ W_enc + b_enc)``'s k largest entries per row.

Implementations (``implementation=``): "xla" (dense pre-activations + `lax.top_k`), "approx" (dense
pre-activations + `lax.approx_max_k`, TPU's fused approximate top-k; exact fallback elsewhere), "pallas"
(the fused encoder+TopK kernel in `kernels/topk.py`, which never writes the dense pre-activations; run per
shard by `kernels/sharded.py` when the context mesh splits the latents over 'model'), and
"auto" (Pallas on TPU/GPU, XLA on CPU). Every output here is a forward value only: gradients come from
`sparse.sparse_encoder_acts`.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from qwen_sae_jax.sae.config import resolve_implementation


class TopKSelection(NamedTuple):
    """What `select_topk` returns (unpacks as ``acts, idx, pre``)."""

    acts: jax.Array  # [B, k] >= 0, rows sorted by decreasing activation
    idx: jax.Array  # [B, k] int32 latent ids
    pre: jax.Array | None  # [B, d_sae] x_enc @ W_enc without b_enc (xla / approx), None on the Pallas path


# recall requested from lax.approx_max_k (measured in benchmarks/sae_step.py, see docs/sae.md)
APPROX_RECALL_TARGET = 0.95


def encoder_matmul(x_enc: jax.Array, W_enc: jax.Array, b_enc: jax.Array | None = None) -> jax.Array:
    """[B, d_in] @ [d_in, d_sae] (+ b_enc [d_sae], added in float32) -> [B, d_sae] (float32 accumulation,
    param dtype out). The TopK selection calls it without the bias and adds ``b_enc`` inside its first
    reduction (see `grouped_top_k`) instead of in a separate pass over the [B, d_sae] matrix, which XLA:CPU
    does not fuse into its matmul."""
    pre = jnp.dot(x_enc, W_enc, preferred_element_type=jnp.float32)
    if b_enc is not None:
        pre = pre + b_enc.astype(jnp.float32)
    return pre.astype(W_enc.dtype)


def top_k_of(pre: jax.Array, bias: jax.Array, k: int, implementation: str) -> tuple[jax.Array, jax.Array]:
    """(values, int32 indices) of the k largest entries of each row of ``pre + bias`` ([B, N] + [N]),
    sorted descending. ``bias`` may hold -inf to exclude columns (AuxK's live latents)."""
    if implementation == "approx":
        vals, idx = lax.approx_max_k(pre + bias, k, recall_target=APPROX_RECALL_TARGET)
        return vals, idx.astype(jnp.int32)
    return grouped_top_k(pre, bias, k)


def grouped_top_k(pre: jax.Array, bias: jax.Array, k: int, group: int = 16) -> tuple[jax.Array, jax.Array]:
    """Exact top-k of ``pre + bias`` in two smaller stages (ties between equal values aside).

    Cut each row into groups of ``group`` entries; the row's k largest entries all lie in the k groups with
    the largest maxima (an entry outranked by k other groups' maxima has k larger entries). So: top-k of
    the [B, N / group] group maxima, gather those k groups, top-k of the k * group candidates. Two top-k's
    over N / group and k * group entries instead of one over N (on CPU about 25% faster at N=16384,
    k=64); the bias is added inside the group-max reduction and to the gathered candidates, so ``pre + bias``
    is never written out. Falls back to `lax.top_k` when the shape does not allow it.
    """
    batch, width = pre.shape
    n_groups = width // group
    if width % group or n_groups < 2 * k:
        vals, idx = lax.top_k(pre + bias, k)
        return vals, idx.astype(jnp.int32)
    grouped = pre.reshape(batch, n_groups, group)
    bias_grouped = bias.reshape(n_groups, group)
    _, best_groups = lax.top_k(jnp.max(grouped + bias_grouped, axis=-1), k)  # [B, k]
    candidates = (jnp.take_along_axis(grouped, best_groups[:, :, None], axis=1)
                  + bias_grouped[best_groups]).reshape(batch, k * group)  # [B, k * group]
    vals, pos = lax.top_k(candidates, k)  # [B, k]
    idx = jnp.take_along_axis(best_groups, pos // group, axis=1) * group + pos % group
    return vals, idx.astype(jnp.int32)


def select_topk(
    x_enc: jax.Array, W_enc: jax.Array, b_enc: jax.Array, k: int, implementation: str = "auto"
) -> TopKSelection:
    """Select the k largest ReLU'd pre-activations per row.

    x_enc [B, d_in] (already normalised and b_dec-shifted), W_enc [d_in, d_sae], b_enc [d_sae].
    Returns ``(acts [B, k] >= 0, idx [B, k] int32, pre)`` where ``pre`` is the dense [B, d_sae] matrix
    ``x_enc @ W_enc`` *without* ``b_enc`` when the implementation built it (xla/approx; reusable for AuxK
    with `top_k_of`) and None for Pallas. Rows are sorted by decreasing activation. No gradient flows
    through the outputs.
    """
    implementation = resolve_implementation(implementation)
    x_enc, W_enc, b_enc = (lax.stop_gradient(a) for a in (x_enc, W_enc, b_enc))
    if implementation == "pallas":
        from qwen_sae_jax.sae.kernels.sharded import model_mesh, model_sharded_topk
        from qwen_sae_jax.sae.kernels.topk import fused_encoder_topk

        mesh = model_mesh()  # latents split over a 'model' axis: one kernel per shard (kernels/sharded.py)
        if mesh is not None:
            acts, idx = model_sharded_topk(x_enc, W_enc, b_enc, k, mesh)
        else:
            acts, idx = fused_encoder_topk(x_enc, W_enc, b_enc, k)
        return TopKSelection(acts.astype(W_enc.dtype), idx, None)
    pre = encoder_matmul(x_enc, W_enc)  # [B, d_sae], no bias
    vals, idx = top_k_of(pre, b_enc.astype(pre.dtype), k, implementation)
    return TopKSelection(jnp.maximum(vals, 0), idx, pre)
