"""The on-device mixing buffer: filtered activations of every hook, shuffled before training.

Layout (H hooks, width D, ``size`` = buffer size, ``M`` = rows added per fill, ``Bt`` = train batch):

    pool   [H, size + M, D]   filtered rows, compacted at the front; ``count`` of them are valid
    ready  [H, S, Bt, D]      S = size / 2 / Bt shuffled training batches, consumed one per step

Cycle: `fill` appends the kept rows of a model batch to ``pool`` until ``count >= size``; `shuffle`
draws a permutation of the first ``size`` rows (from ``key``), turns the first half into ``ready`` and
moves the other half (plus any overflow rows) to the front of ``pool``. So each activation waits a random
number of cycles and consecutive training batches mix many documents. Rows stay aligned across hooks
(one keep mask for all), so row i of every hook is the same token.

Every operation is a pure function on global arrays: the result does not depend on how many devices
the arrays are sharded over (``pool`` and ``ready`` are sharded on their row / batch axis over ``data``).
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


class MixingBuffer(flax.struct.PyTreeNode):
    pool: jax.Array    # [H, size + M, D]
    count: jax.Array   # [] int32 valid rows at the front of pool
    ready: jax.Array   # [H, S, Bt, D]


def buffer_shardings(mesh: Mesh | AbstractMesh) -> MixingBuffer:
    """The buffer's shardings as a pytree of its structure (a NamedSharding where each array goes)."""
    return MixingBuffer(pool=NamedSharding(mesh, P(None, "data", None)),  # type: ignore[arg-type]
                        count=NamedSharding(mesh, P()),  # type: ignore[arg-type]
                        ready=NamedSharding(mesh, P(None, None, "data", None)))  # type: ignore[arg-type]


def init_buffer(num_hooks: int, d: int, size: int, rows_per_fill: int, batch_size: int, dtype) -> MixingBuffer:
    """An empty buffer (call under jit with out_shardings=buffer_shardings(mesh) to create it sharded)."""
    return MixingBuffer(pool=jnp.zeros((num_hooks, size + rows_per_fill, d), dtype),
                        count=jnp.zeros((), jnp.int32),
                        ready=jnp.zeros((num_hooks, size // 2 // batch_size, batch_size, d), dtype))


def fill(buf: MixingBuffer, x: jax.Array, keep: jax.Array) -> MixingBuffer:
    """Append the rows of x [H, M, D] where keep [M] is true, in order, after the ``count`` valid rows.

    Needs ``count + M <= pool rows`` (true whenever ``count < size``: fill only until full)."""
    rows = buf.pool.shape[1]
    dest = jnp.where(keep, buf.count + jnp.cumsum(keep, dtype=jnp.int32) - 1, rows)   # [M]; rows = dropped
    pool = buf.pool.at[:, dest].set(x.astype(buf.pool.dtype), mode="drop")
    return buf.replace(pool=pool, count=buf.count + jnp.sum(keep, dtype=jnp.int32))


def shuffle(buf: MixingBuffer, key: jax.Array, size: int) -> MixingBuffer:
    """Emit half of a full buffer (``count >= size``) as shuffled batches into ``ready``."""
    H, rows, D = buf.pool.shape
    S, Bt = buf.ready.shape[1], buf.ready.shape[2]
    half = size // 2
    perm = jax.random.permutation(key, size)                                   # [size]
    ready = buf.pool[:, perm[:half]].reshape(H, S, Bt, D)
    kept = buf.pool[:, perm[half:]]                                            # [H, size - half, D]
    overflow = buf.pool[:, size:]                                              # [H, rows - size, D]
    pool = jnp.concatenate([kept, overflow, jnp.zeros((H, half, D), buf.pool.dtype)], axis=1)
    return MixingBuffer(pool=pool, count=buf.count - half, ready=ready)


def take_rows(buf: MixingBuffer, start: jax.Array, length: int) -> jax.Array:
    """pool[:, start:start + length] (a fixed-size dynamic slice: one compilation for every start)."""
    return jax.lax.dynamic_slice_in_dim(buf.pool, start, length, axis=1)
