"""Fused encoder + TopK Pallas kernel: the k largest ``relu(x @ W_enc + b_enc)`` entries of each row, without
writing the [B, d_sae] pre-activation matrix to device memory.

Equivalent plain JAX (what the tests compare against; ties between equal values aside):

    def fused_encoder_topk(x, W_enc, b_enc, k):
        acts, idx = jax.lax.top_k(jax.nn.relu(x @ W_enc + b_enc), k)   # [B, k], [B, k]
        return acts, idx.astype(jnp.int32)

Design. The batch is cut into row blocks of ``block_b`` rows and the latents into tiles of ``block_n``
columns, grouped into ``num_splits`` contiguous splits. For each (row block, split) the kernel keeps a
*running top-k* per row (``kp >= k`` value/index slots; the slots past k hold +inf and are never
evicted) and visits the split's tiles in order: it computes the tile's scores ``relu(x_blk @ W_tile +
b_tile)`` [block_b, block_n] on the MXU / tensor cores and merges them into the running top-k by
*threshold-filtered insertion*:

    while any row has max(scores) > min(running):      # usually only a few rounds after the first tile
        m, p = max and first argmax of each row's scores
        where m > min(running): replace that row's smallest running slot with (m, tile_start + p)
        scores[row, p] = -inf

Once the running k-th value is high, most tiles are rejected after one comparison, so the selection
costs little next to the matmul. Each (row block, split) writes only its kp candidates; a second stage
outside the kernel picks the final k from the ``num_splits * k`` candidates (`lax.top_k`, or a sort when
there is one split) and returns them sorted by decreasing value.

Two lowerings of the same merge step:
  * TPU (Mosaic): grid (row blocks, splits, tiles); the tile axis is "arbitrary" (sequential) and the
    running top-k lives in the output block, resident in VMEM across it; BlockSpecs stream x and W_enc
    tiles (block dims multiples of 8 x 128). The whole d_in is one block (VMEM budget checked).
  * GPU (Triton, via `pallas.triton.CompilerParams`): grid (row blocks, splits); each program loops over
    its tiles with `fori_loop` and over d_in in ``block_d`` chunks (power-of-two block shapes).
On CPU the TPU form runs with ``interpret=True`` (tests only; slow).

Inputs whose B or d_sae are not multiples of the blocks are padded in the wrapper (the padded latent
columns are masked to -inf inside the kernel); the Qwen-Scope preset shapes need no padding.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

BACKENDS = ("tpu", "triton")
# the double-buffered x and W_enc blocks of the TPU kernel must fit in this much VMEM
_TPU_VMEM_BUDGET = 24 * 1024 * 1024


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _next_pow2(value: int) -> int:
    return 1 << max(0, (value - 1).bit_length())


# ----------------------------------------------------------------------------------------------------
# the merge step shared by both lowerings
# ----------------------------------------------------------------------------------------------------
def _merge_tile(run_v, run_i, scores, col0):
    """Merge a tile's scores [bm, bn] (f32, -inf = excluded) into the running top-k (run_v f32 [bm, kp],
    run_i int32 [bm, kp]); ``col0`` is the tile's first latent index. Everything stays 2-D for Mosaic."""
    bm, bn = scores.shape
    kp = run_v.shape[1]
    pos_n = lax.broadcasted_iota(jnp.int32, (bm, bn), 1).astype(jnp.float32)
    pos_k = lax.broadcasted_iota(jnp.int32, (bm, kp), 1).astype(jnp.float32)

    def row_min_run(v):
        return jnp.min(v, axis=1, keepdims=True)  # [bm, 1]

    def keep_going(state):
        v, _, s = state
        gain = (jnp.max(s, axis=1, keepdims=True) > row_min_run(v)).astype(jnp.float32)  # [bm, 1]
        return jnp.max(gain) > 0

    def insert_one(state):
        v, i, s = state
        m = jnp.max(s, axis=1, keepdims=True)  # [bm, 1]
        p = jnp.min(jnp.where(s == m, pos_n, float(bn)), axis=1, keepdims=True)  # first argmax, [bm, 1]
        r_min = row_min_run(v)
        r_pos = jnp.min(jnp.where(v == r_min, pos_k, float(kp)), axis=1, keepdims=True)
        replace = (pos_k == r_pos) & (m > r_min)  # [bm, kp]
        v = jnp.where(replace, m, v)
        i = jnp.where(replace, col0 + p.astype(jnp.int32), i)
        s = jnp.where(pos_n == p, -jnp.inf, s)
        return v, i, s

    v, i, _ = lax.while_loop(keep_going, insert_one, (run_v, run_i, scores))
    return v, i


def _initial_running(bm: int, kp: int, k: int):
    slot = lax.broadcasted_iota(jnp.int32, (bm, kp), 1)
    return jnp.where(slot < k, -jnp.inf, jnp.inf).astype(jnp.float32), jnp.zeros((bm, kp), jnp.int32)


def _tile_scores(pre, col0, n_valid):
    """relu(pre) with the columns at or past n_valid (padding) set to -inf."""
    bm, bn = pre.shape
    col = col0 + lax.broadcasted_iota(jnp.int32, (bm, bn), 1)
    return jnp.where(col < n_valid, jnp.maximum(pre, 0.0), -jnp.inf)


# ----------------------------------------------------------------------------------------------------
# TPU (Mosaic)
# ----------------------------------------------------------------------------------------------------
def _tpu_kernel(x_ref, w_ref, b_ref, v_ref, i_ref, *, k, block_n, tiles_per_split, n_valid):
    split, tile = pl.program_id(1), pl.program_id(2)
    bm, kp = v_ref.shape

    @pl.when(tile == 0)
    def _init():
        v0, i0 = _initial_running(bm, kp, k)
        v_ref[...] = v0
        i_ref[...] = i0

    col0 = (split * tiles_per_split + tile) * block_n
    pre = jnp.dot(x_ref[...], w_ref[...], preferred_element_type=jnp.float32) + b_ref[...].astype(jnp.float32)
    v, i = _merge_tile(v_ref[...], i_ref[...], _tile_scores(pre, col0, n_valid), col0)
    v_ref[...] = v
    i_ref[...] = i


def _tpu_call(x, w, b, *, k, kp, block_b, block_n, num_splits, tiles_per_split, n_valid, interpret):
    batch, d_in = x.shape
    grid = (batch // block_b, num_splits, tiles_per_split)
    kernel = functools.partial(_tpu_kernel, k=k, block_n=block_n, tiles_per_split=tiles_per_split, n_valid=n_valid)
    compiler_params = None
    if not interpret:
        from jax.experimental.pallas import tpu as pltpu

        compiler_params = pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "arbitrary"), vmem_limit_bytes=_TPU_VMEM_BUDGET + (8 << 20)
        )
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=[
            pl.BlockSpec((block_b, d_in), lambda r, s, t: (r, 0)),
            pl.BlockSpec((d_in, block_n), lambda r, s, t: (0, s * tiles_per_split + t)),
            pl.BlockSpec((1, block_n), lambda r, s, t: (0, s * tiles_per_split + t)),
        ],
        out_specs=[
            pl.BlockSpec((block_b, kp), lambda r, s, t: (r, s)),
            pl.BlockSpec((block_b, kp), lambda r, s, t: (r, s)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((batch, num_splits * kp), jnp.float32),
            jax.ShapeDtypeStruct((batch, num_splits * kp), jnp.int32),
        ],
        compiler_params=compiler_params,
        interpret=interpret,
        name="sae_fused_encoder_topk_tpu",
    )(x, w, b.reshape(1, -1))


# ----------------------------------------------------------------------------------------------------
# GPU (Triton)
# ----------------------------------------------------------------------------------------------------
def _triton_kernel(x_ref, w_ref, b_ref, v_ref, i_ref, *, k, block_b, block_n, block_d, tiles_per_split, n_valid):
    row0 = pl.program_id(0) * block_b
    split = pl.program_id(1)
    d_in = x_ref.shape[1]
    kp = v_ref.shape[1]

    def one_tile(tile, running):
        col0 = (split * tiles_per_split + tile) * block_n

        def one_chunk(c, acc):
            xs = x_ref[pl.ds(row0, block_b), pl.ds(c * block_d, block_d)]  # [bm, bd]
            ws = w_ref[pl.ds(c * block_d, block_d), pl.ds(col0, block_n)]  # [bd, bn]
            return acc + jnp.dot(xs, ws, preferred_element_type=jnp.float32)

        pre = lax.fori_loop(0, d_in // block_d, one_chunk, jnp.zeros((block_b, block_n), jnp.float32))
        pre = pre + b_ref[pl.ds(col0, block_n)].astype(jnp.float32)[None, :]
        return _merge_tile(*running, _tile_scores(pre, col0, n_valid), col0)

    v, i = lax.fori_loop(0, tiles_per_split, one_tile, _initial_running(block_b, kp, k))
    v_ref[...] = v
    i_ref[...] = i


def _triton_call(x, w, b, *, k, kp, block_b, block_n, block_d, num_splits, tiles_per_split, n_valid, interpret):
    batch, d_in = x.shape
    kernel = functools.partial(_triton_kernel, k=k, block_b=block_b, block_n=block_n, block_d=block_d,
                               tiles_per_split=tiles_per_split, n_valid=n_valid)
    compiler_params = None
    if not interpret:
        from jax.experimental.pallas import triton as pltriton

        compiler_params = pltriton.CompilerParams(num_warps=4, num_stages=2)
    whole = pl.BlockSpec(memory_space=pl.ANY) if interpret else pl.no_block_spec
    return pl.pallas_call(
        kernel,
        grid=(batch // block_b, num_splits),
        in_specs=[whole, whole, whole],
        out_specs=[pl.BlockSpec((block_b, kp), lambda r, s: (r, s))] * 2,
        out_shape=[
            jax.ShapeDtypeStruct((batch, num_splits * kp), jnp.float32),
            jax.ShapeDtypeStruct((batch, num_splits * kp), jnp.int32),
        ],
        compiler_params=compiler_params,
        interpret=interpret,
        name="sae_fused_encoder_topk_triton",
    )(x, w, b)


# ----------------------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------------------
def default_backend() -> tuple[str, bool]:
    """(kernel backend, interpret) for the default JAX backend: Mosaic on TPU, Triton on GPU, the TPU form
    interpreted on CPU."""
    platform = jax.default_backend()
    if platform == "tpu":
        return "tpu", False
    if platform in ("gpu", "cuda", "rocm"):
        return "triton", False
    return "tpu", True


def block_sizes(backend: str, batch: int, d_in: int, d_sae: int, k: int, itemsize: int) -> dict[str, int]:
    """Default block sizes: TPU blocks are multiples of (8, 128) sized to the VMEM budget; Triton blocks are
    powers of two. ``num_splits`` gives enough parallel programs to fill the chip."""
    if backend == "tpu":
        block_b = min(256, _round_up(batch, 8))
        block_n = 512
        while block_n > 128 and 2 * (block_b + block_n) * d_in * itemsize > _TPU_VMEM_BUDGET:
            block_n //= 2
        while block_b > 8 and 2 * (block_b + block_n) * d_in * itemsize > _TPU_VMEM_BUDGET:
            block_b //= 2
        block_n = min(block_n, _round_up(d_sae, 128))
        n_tiles = -(-d_sae // block_n)
        num_splits = 2 if n_tiles >= 8 and n_tiles % 2 == 0 else 1  # one split per TensorCore on megacore chips
        return dict(block_b=block_b, block_n=block_n, block_d=d_in, num_splits=num_splits)
    block_b = min(64, max(16, _next_pow2(batch)))
    block_n = min(128, max(16, _next_pow2(d_sae)))
    block_d = 32 if d_in % 32 == 0 else 16 if d_in % 16 == 0 else 8 if d_in % 8 == 0 else 1
    n_tiles = -(-d_sae // block_n)
    row_blocks = -(-batch // block_b)
    num_splits = max(1, min(n_tiles // 4, _next_pow2(-(-264 // row_blocks))))  # >= ~2 programs per SM (132 SMs)
    # keep the candidates written (num_splits * kp per row) well below d_sae, e.g. for AuxK's large k_aux
    while num_splits > 1 and num_splits * _next_pow2(k) > d_sae // 8:
        num_splits //= 2
    return dict(block_b=block_b, block_n=block_n, block_d=block_d, num_splits=num_splits)


def fused_encoder_topk(
    x: jax.Array,
    W_enc: jax.Array,
    b_enc: jax.Array,
    k: int,
    *,
    backend: str | None = None,
    interpret: bool | None = None,
    block_b: int | None = None,
    block_n: int | None = None,
    block_d: int | None = None,
    num_splits: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Top-k of ``relu(x @ W_enc + b_enc)`` per row: x [B, d_in], W_enc [d_in, d_sae], b_enc [d_sae] ->
    (acts [B, k] float32 sorted descending, idx [B, k] int32). ``backend`` "tpu" | "triton" (None: from
    the default device; on CPU the TPU form in interpret mode). Not differentiable (see sparse.py)."""
    batch, d_in = x.shape
    d_sae = W_enc.shape[1]
    if not 1 <= k <= d_sae:
        raise ValueError(f"k={k} must be in [1, d_sae={d_sae}]")
    if backend is None:
        backend, auto_interpret = default_backend()
        interpret = auto_interpret if interpret is None else interpret
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; valid: {', '.join(BACKENDS)}")
    interpret = bool(interpret)
    sizes = block_sizes(backend, batch, d_in, d_sae, k, jnp.dtype(W_enc.dtype).itemsize)
    for name, value in (("block_b", block_b), ("block_n", block_n), ("block_d", block_d), ("num_splits", num_splits)):
        if value is not None:
            sizes[name] = value
    bm, bn, splits = sizes["block_b"], sizes["block_n"], sizes["num_splits"]
    kp = _round_up(k, 128) if backend == "tpu" else _next_pow2(k)
    if backend == "triton" and d_in % sizes["block_d"]:
        raise ValueError(f"d_in={d_in} must be a multiple of block_d={sizes['block_d']}")

    tiles_per_split = -(-d_sae // (bn * splits))
    n_pad = tiles_per_split * bn * splits
    b_pad = _round_up(batch, bm)
    if b_pad != batch:
        x = jnp.pad(x, ((0, b_pad - batch), (0, 0)))
    if n_pad != d_sae:
        W_enc = jnp.pad(W_enc, ((0, 0), (0, n_pad - d_sae)))
        b_enc = jnp.pad(b_enc, (0, n_pad - d_sae))
    common = dict(k=k, kp=kp, block_b=bm, block_n=bn, num_splits=splits, tiles_per_split=tiles_per_split,
                  n_valid=d_sae, interpret=interpret)
    x = x.astype(W_enc.dtype)
    if backend == "tpu":
        vals, idx = _tpu_call(x, W_enc, b_enc, **common)
    else:
        vals, idx = _triton_call(x, W_enc, b_enc, block_d=sizes["block_d"], **common)

    # second stage: the k best of the num_splits * k candidates of each row (the +inf filler slots dropped)
    vals = vals[:batch].reshape(batch, splits, kp)[:, :, :k].reshape(batch, splits * k)
    idx = idx[:batch].reshape(batch, splits, kp)[:, :, :k].reshape(batch, splits * k)
    if splits == 1:
        neg_vals, idx = lax.sort((-vals, idx), dimension=1, num_keys=2)
        return -neg_vals, idx
    vals, pos = lax.top_k(vals, k)
    return vals, jnp.take_along_axis(idx, pos, axis=1)

