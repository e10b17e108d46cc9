"""Sparse TopK computation: gather decode and scatter-add backward (`jax.custom_vjp`).

A TopK SAE touches only ``k`` of its ``d_sae`` latents per token, so both the decoder and the encoder
backward can work on ``[B, k]`` (values, indices) pairs instead of a dense ``[B, d_sae]`` latent matrix:

* `sparse_decode(acts, idx, W_dec)`           ``x_hat[b] = sum_s acts[b, s] * W_dec[idx[b, s]]``
  forward: a gather of ``k`` decoder rows per token; backward: ``d acts[b, s] = g[b] . W_dec[idx[b, s]]``
  (k dot products per token) and a scatter-add of ``acts[b, s] * g[b]`` into the rows ``idx[b, s]`` of
  ``dW_dec``.
* `sparse_encoder_acts(acts, idx, x, W_enc, b_enc, b_dec, subtract_b_dec)` returns ``acts`` (the selected,
  ReLU'd pre-activations ``relu(((x - b_dec) @ W_enc + b_enc)[b, idx[b, s]])`` that the selection step
  already computed) unchanged, and gives them the gradient of that expression, touching only the
  selected latents: ``db_enc = segment_sum(g')``, ``dW_enc^T[idx] += g' * (x - b_dec)`` (scatter-add of
  rows, then one transpose), ``db_dec = -W_enc @ db_enc``, ``dx = sum_s g' W_enc[:, idx]`` with
  ``g' = g * (acts > 0)``. ``dx`` is dead code (removed by XLA) unless the caller differentiates w.r.t. x.

The ``[B, k, d_in]`` intermediate (1 GB at B=4096, k=64, d_in=1024) never exists: the weighted gathers
loop over the k slots, the scatter-adds and row-wise dot products run over batch chunks in a ``lax.scan``
whose ``[chunk, k, d_in]`` block (about ``_CHUNK_ELEMENTS`` floats) is the only temporary.

Why there is no Pallas version of the decoder (see docs/sae.md): the forward is a gather-reduce that
reads each selected row once (``B*k*d_in`` loads, memory bound, no reuse to exploit), which XLA's fused
gather already does at bandwidth on GPU/TPU; the backward scatter-add likewise writes ``B*k*d_in``
values, bandwidth bound, and XLA lowers it to a sorted/atomic scatter on GPU and to a serialised
in-place update on TPU. Both are a few percent of the encoder matmul (``B*d_in*d_sae`` MACs), i.e.
``k/d_sae`` of it, so a hand-written kernel could not move the step time measurably.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

# indices come from a top-k over the table's rows, so they are always in range: no bounds checks
_IN_BOUNDS = "promise_in_bounds"
# each scan step materialises at most about this many floats of [chunk, k, d_in] temporaries
_CHUNK_ELEMENTS = 1 << 22


def _batch_chunk(batch: int, k: int, d_in: int) -> int:
    """Largest divisor of ``batch`` whose [chunk, k, d_in] block stays under _CHUNK_ELEMENTS."""
    target = max(1, _CHUNK_ELEMENTS // max(k * d_in, 1))
    if target >= batch:
        return batch
    for chunk in range(target, 0, -1):
        if batch % chunk == 0:
            return chunk
    return 1


def _chunked(array: jax.Array, chunk: int) -> jax.Array:
    """[B, ...] -> [B // chunk, chunk, ...]."""
    return array.reshape((array.shape[0] // chunk, chunk) + array.shape[1:])


def gather_rows_weighted(weights: jax.Array, idx: jax.Array, table: jax.Array) -> jax.Array:
    """``out[b] = sum_s weights[b, s] * table[idx[b, s]]``: weights/idx [B, k], table [N, D] -> [B, D].

    A loop over the k slots, each step gathering one row per token and accumulating into [B, D]: XLA fuses
    gather + multiply-add into one parallel loop per step, so no [B, k, D] block is ever formed (on CPU
    this measured about 2x faster than chunked gather + batched dot). Accumulates in float32.
    """
    batch, k = idx.shape

    def one_slot(s, acc):
        rows = table.at[idx[:, s]].get(mode=_IN_BOUNDS)  # [B, D]
        return acc + weights[:, s, None].astype(jnp.float32) * rows.astype(jnp.float32)

    out = lax.fori_loop(0, k, one_slot, jnp.zeros((batch, table.shape[1]), jnp.float32), unroll=min(k, 4))
    return out.astype(table.dtype)


def scatter_add_outer(weights: jax.Array, idx: jax.Array, vectors: jax.Array, num_rows: int) -> jax.Array:
    """``out[n] = sum_{b,s: idx[b,s]=n} weights[b, s] * vectors[b]``: weights/idx [B, k], vectors [B, D]
    -> [num_rows, D] float32 (the sparse product ``Z^T @ vectors`` with Z the [B, num_rows] matrix holding
    ``weights`` at ``idx``)."""
    batch, k = idx.shape
    dim = vectors.shape[1]
    chunk = _batch_chunk(batch, k, dim)

    def one_chunk(acc, inputs):
        w, i, v = inputs  # [chunk, k], [chunk, k], [chunk, D]
        updates = w.astype(jnp.float32)[:, :, None] * v.astype(jnp.float32)[:, None, :]  # [chunk, k, D]
        acc = acc.at[i.reshape(-1)].add(updates.reshape(-1, dim), mode=_IN_BOUNDS)
        return acc, None

    acc = jnp.zeros((num_rows, dim), jnp.float32)
    if chunk == batch:
        return one_chunk(acc, (weights, idx, vectors))[0]
    acc, _ = lax.scan(one_chunk, acc, (_chunked(weights, chunk), _chunked(idx, chunk), _chunked(vectors, chunk)))
    return acc


def transpose_materialized(matrix: jax.Array, block: int = 256) -> jax.Array:
    """``matrix.T`` [N, D] -> [D, N], written out block by block inside a loop.

    A plain ``.T`` gets fused by XLA into its consumers (here: Adam's elementwise update), which then read
    the gradient with a stride of N floats; on CPU that made the W_enc Adam update 3-4x slower than the
    transpose plus a contiguous update. XLA does not fuse across a loop boundary, so the transposed
    gradient is materialised once with cache-friendly block transposes.
    """
    rows, cols = matrix.shape
    if rows % block or rows <= block:
        return matrix.T

    def one_block(j, out):
        part = lax.dynamic_slice_in_dim(matrix, j * block, block, axis=0)  # [block, D]
        return lax.dynamic_update_slice_in_dim(out, part.T, j * block, axis=1)

    return lax.fori_loop(0, rows // block, one_block, jnp.zeros((cols, rows), matrix.dtype))


def segment_sum_flat(weights: jax.Array, idx: jax.Array, num_rows: int) -> jax.Array:
    """``out[n] = sum_{b,s: idx[b,s]=n} weights[b, s]`` as float32 [num_rows]."""
    return jnp.zeros((num_rows,), jnp.float32).at[idx.reshape(-1)].add(
        weights.reshape(-1).astype(jnp.float32), mode=_IN_BOUNDS
    )


# ----------------------------------------------------------------------------------------------------
# sparse decode
# ----------------------------------------------------------------------------------------------------
@jax.custom_vjp
def sparse_decode(acts: jax.Array, idx: jax.Array, W_dec: jax.Array) -> jax.Array:
    """``x_hat[b] = sum_s acts[b, s] * W_dec[idx[b, s]]`` (no bias). acts/idx [B, k], W_dec [d_sae, d_in]."""
    return gather_rows_weighted(acts, idx, W_dec)


def _sparse_decode_fwd(acts, idx, W_dec):
    return gather_rows_weighted(acts, idx, W_dec), (acts, idx, W_dec)


def _sparse_decode_bwd(residuals, g):
    acts, idx, W_dec = residuals  # g: [B, d_in]
    d_acts = _rowwise_dots(g, idx, W_dec).astype(acts.dtype)  # [B, k]
    d_W_dec = scatter_add_outer(acts, idx, g, W_dec.shape[0]).astype(W_dec.dtype)  # [d_sae, d_in]
    return d_acts, None, d_W_dec


sparse_decode.defvjp(_sparse_decode_fwd, _sparse_decode_bwd)


def _rowwise_dots(vectors: jax.Array, idx: jax.Array, table: jax.Array) -> jax.Array:
    """``out[b, s] = vectors[b] . table[idx[b, s]]``: vectors [B, D], idx [B, k], table [N, D] -> [B, k] f32."""
    batch, k = idx.shape
    chunk = _batch_chunk(batch, k, table.shape[1])

    def one_chunk(carry, inputs):
        v, i = inputs
        rows = table.at[i].get(mode=_IN_BOUNDS)  # [chunk, k, D]
        return carry, jnp.einsum("cd,ckd->ck", v.astype(jnp.float32), rows.astype(jnp.float32))

    if chunk == batch:
        return one_chunk(None, (vectors, idx))[1]
    _, out = lax.scan(one_chunk, None, (_chunked(vectors, chunk), _chunked(idx, chunk)))
    return out.reshape(batch, k)


# ----------------------------------------------------------------------------------------------------
# sparse encoder backward
# ----------------------------------------------------------------------------------------------------
@partial(jax.custom_vjp, nondiff_argnums=(6,))
def sparse_encoder_acts(acts, idx, x, W_enc, b_enc, b_dec, subtract_b_dec: bool):
    """Identity on ``acts`` [B, k] (= relu(pre)[b, idx[b, s]], computed by the selection step, which must
    not be differentiated: pass its outputs through ``lax.stop_gradient``), with the gradient of
    ``relu(((x - b_dec?) @ W_enc + b_enc)[b, idx[b, s]])`` w.r.t. x [B, d_in], W_enc [d_in, d_sae],
    b_enc [d_sae] and b_dec [d_in], computed sparsely (see module docstring)."""
    del idx, x, W_enc, b_enc, b_dec
    return acts


def _sparse_encoder_acts_fwd(acts, idx, x, W_enc, b_enc, b_dec, subtract_b_dec):
    return acts, (acts, idx, x, W_enc, b_dec)


def _sparse_encoder_acts_bwd(subtract_b_dec, residuals, g):
    acts, idx, x, W_enc, b_dec = residuals
    d_sae = W_enc.shape[1]
    g_pre = jnp.where(acts > 0, g, 0).astype(jnp.float32)  # [B, k] gradient w.r.t. the selected pre-acts
    x_enc = x - b_dec if subtract_b_dec else x  # [B, d_in]
    d_b_enc = segment_sum_flat(g_pre, idx, d_sae)  # [d_sae]
    d_W_enc = transpose_materialized(scatter_add_outer(g_pre, idx, x_enc, d_sae))  # [d_sae, d_in] -> [d_in, d_sae]
    d_x = gather_rows_weighted(g_pre, idx, W_enc.T)  # [B, d_in]; dead code unless x is differentiated
    if subtract_b_dec:
        d_b_dec = -(W_enc.astype(jnp.float32) @ d_b_enc)  # = -sum_b d_x[b], as one mat-vec
    else:
        d_b_dec = jnp.zeros(b_dec.shape, jnp.float32)
    return (
        jnp.zeros_like(acts),
        None,
        d_x.astype(x.dtype),
        d_W_enc.astype(W_enc.dtype),
        d_b_enc.astype(W_enc.dtype),
        d_b_dec.astype(b_dec.dtype),
    )


sparse_encoder_acts.defvjp(_sparse_encoder_acts_fwd, _sparse_encoder_acts_bwd)
