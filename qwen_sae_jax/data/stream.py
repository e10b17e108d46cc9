"""The activation stream: fills a `MixingBuffer` from the model (or from an activation cache).

From the model, one jitted function per batch does everything on device:

    tokens [B, T] (sharded over 'data')
      -> lm.apply(params, tokens, capture=hooks, stop_after_capture=True)   # layers above the deepest hook
                                                                            # and the LM head are not run
      -> stack the hooks: x [H, B, T, D]
      -> filter_positions (special tokens, first position, NaN/inf, norm outliers; one mask for all hooks)
      -> buffer.fill (kept rows appended after the valid ones)

With a cache writer, the fill also returns the filtered batch (rows [H, B*T, D] and keep [B*T], sharded over
'data' by token row); each writing process copies only its own token rows' part to the host and appends
their kept rows, in token order, as one chunk (`data.cache`: every process writes its own shards).

From a cache, the global batch of step j is rows [j*M, (j+1)*M) of the cache's global row order (modulo its
size), sharded over 'data': each process reads only the rows its devices hold (those of a slice [a, b) of
the batch read global rows j*M + a ... j*M + b - 1), so 1 or N processes train on the same batches. The rows
are appended unfiltered (they were filtered when written).

Host side, `refill` loops until the buffer holds ``size`` rows (one device->host read of ``count`` per
batch) and accumulates the drop counts.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from qwen_sae_jax.data import buffer as mixing
from qwen_sae_jax.data.cache import CacheReader, CacheWriter
from qwen_sae_jax.data.filter import DropCounts, FilterState, filter_positions, init_filter_state

COUNT_KEYS = ("seen", "special", "first", "nonfinite", "outlier", "kept")


class ActivationStream:
    """Source of activations for one set of hooks; see the module docstring.

    Exactly one of (``lm``, ``tokens``) or ``cache`` is given. ``rows_per_fill`` is B*T (model) or the rows
    read per cache step. State for checkpoints: `get_state` / `set_state` (token iterator or cache position,
    drop counts) plus the `FilterState` pytree the caller keeps with the buffer.
    """

    def __init__(self, hooks: Sequence[str], mesh: Mesh, *, lm: Any = None, tokens: Any = None,
                 special_ids: Sequence[int] = (), drop_first: bool = True, outlier_factor: float | None = None,
                 cache: CacheReader | None = None, cache_rows: int = 0, writer: CacheWriter | None = None,
                 global_batch: int = 0, ctx_len: int = 0):
        self.hooks, self.mesh = list(hooks), mesh
        self.lm, self.tokens, self.cache, self.writer = lm, tokens, cache, writer
        self._filtered_jit: Callable | None = None   # compiled on first use of `next_rows`
        self.counts: dict[str, Any] = {k: 0 if k not in ("nonfinite", "outlier") else [0] * len(self.hooks)
                                       for k in COUNT_KEYS}
        if cache is not None:
            self.rows_per_fill = cache_rows
            self._fill = jax.jit(self._fill_rows, donate_argnums=(0,))
        else:
            self.global_batch, self.ctx_len = global_batch, ctx_len
            self.rows_per_fill = global_batch * ctx_len
            special = jnp.asarray(sorted(set(special_ids)), jnp.int32) if special_ids else None
            self._filter_args = (special, drop_first, outlier_factor)
            self._fill = jax.jit(self._fill_model, donate_argnums=(1, 2))
            self._fill_keeping_rows = jax.jit(self._fill_model_keeping_rows, donate_argnums=(1, 2))

    def with_tokens(self, tokens: Any) -> "ActivationStream":
        """The same stream (same compiled fill, filter settings) reading another token iterator, with fresh
        drop counts and no cache writer (e.g. the held-out documents of the final table)."""
        other = copy.copy(self)
        other.tokens, other.writer = tokens, None
        other.counts = {k: 0 if k not in ("nonfinite", "outlier") else [0] * len(self.hooks) for k in COUNT_KEYS}
        return other

    # ------------------------------------------------------------------ jitted bodies
    def _filtered(self, params, fstate: FilterState, tokens: jax.Array):
        """tokens [B, T] -> (rows [H, B*T, D], keep [B*T], fstate, counts)."""
        _, acts = self.lm.apply(params, tokens, capture=self.hooks, stop_after_capture=True)
        x = jnp.stack([acts[h] for h in self.hooks])                               # [H, B, T, D]
        keep, fstate, counts = filter_positions(x, tokens, fstate, *self._filter_args)
        H, B, T, D = x.shape
        return x.reshape(H, B * T, D), keep, fstate, counts

    def _fill_model(self, params, buf: mixing.MixingBuffer, fstate: FilterState, tokens: jax.Array):
        rows, keep, fstate, counts = self._filtered(params, fstate, tokens)
        return mixing.fill(buf, rows, keep), fstate, counts

    def _fill_model_keeping_rows(self, params, buf: mixing.MixingBuffer, fstate: FilterState, tokens: jax.Array):
        """`_fill_model`, also returning rows [H, B*T, D] (in the buffer's dtype) and keep [B*T], both sharded
        over 'data' by token row (so each process holds its own token rows' part)."""
        rows, keep, fstate, counts = self._filtered(params, fstate, tokens)
        rows = jax.lax.with_sharding_constraint(rows.astype(buf.pool.dtype), NamedSharding(self.mesh, P(None, "data")))
        keep = jax.lax.with_sharding_constraint(keep, NamedSharding(self.mesh, P("data")))
        return mixing.fill(buf, rows, keep), fstate, counts, rows, keep

    @staticmethod
    def _fill_rows(buf: mixing.MixingBuffer, rows: jax.Array):
        return mixing.fill(buf, rows, jnp.ones((rows.shape[1],), bool))

    # ------------------------------------------------------------------ host side
    def init_filter_state(self) -> FilterState:
        """A fresh filter state, replicated over the mesh (created by a compiled function: a device_put of a
        local array onto a mesh spanning processes gives an array orbax cannot save)."""
        make = jax.jit(init_filter_state, static_argnums=(0,), out_shardings=NamedSharding(self.mesh, P()))
        return make(len(self.hooks))

    def _global_tokens(self) -> jax.Array:
        local = np.asarray(next(self.tokens), np.int32)                             # [rows of this process, T]
        sharding = NamedSharding(self.mesh, P("data", None))
        return jax.make_array_from_process_local_data(sharding, local, (self.global_batch, self.ctx_len))

    def _global_cache_rows(self, pool_dtype) -> jax.Array:
        """The next M cache rows [H, M, D] as a global array over 'data': this process reads only its part."""
        cache = self.cache
        assert cache is not None  # called only when the stream reads a cache
        start, n = cache.position, self.rows_per_fill
        shape = (len(self.hooks), n, cache.d)
        sharding = NamedSharding(self.mesh, P(None, "data", None))
        read: dict[tuple, np.ndarray] = {}     # devices holding the same rows ('model' replicas) read them once

        def rows(index) -> np.ndarray:                # (slice, slice, slice) -> [H, rows of index, D]
            key = index[1].indices(n)
            if key not in read:
                read[key] = cache.read(start, n, index[1]).astype(pool_dtype)
            return read[key]

        arr = jax.make_array_from_callback(shape, sharding, rows)
        cache.position = (start + n) % cache.rows
        return arr

    def _add_counts(self, counts: DropCounts) -> None:
        c = jax.device_get(counts)
        for key in COUNT_KEYS:
            value = np.asarray(getattr(c, key))
            if value.ndim:
                self.counts[key] = [int(a) + int(b) for a, b in zip(self.counts[key], value)]
            else:
                self.counts[key] += int(value)

    def fill_once(self, params, buf: mixing.MixingBuffer, fstate: FilterState):
        """Add one batch of activations; returns (buf, fstate). With a writer (on every process of the job:
        they all run the same compiled fill), each writing process appends its kept rows to the cache."""
        if self.cache is not None:
            buf = self._fill(buf, self._global_cache_rows(buf.pool.dtype))
        elif self.writer is None:
            buf, fstate, counts = self._fill(params, buf, fstate, self._global_tokens())
            self._add_counts(counts)
        else:
            buf, fstate, counts, rows, keep = self._fill_keeping_rows(params, buf, fstate, self._global_tokens())
            self._add_counts(counts)
            if self.writer.active:
                local_keep = _process_part(keep, axis=0)                       # [rows of this process * T]
                self.writer.append(_process_part(rows, axis=1)[:, local_keep])  # [H, kept, D]
        return buf, fstate

    def next_rows(self, params, fstate: FilterState, dtype):
        """One batch of activations without a buffer: ``(rows [H, M, D] in dtype, keep [M] bool, fstate)``, rows
        over 'data' (the end-of-run evaluation streams these instead of filling a buffer of its own)."""
        if self.cache is not None:
            rows = self._global_cache_rows(dtype)
            n = rows.shape[1]
            keep = jax.make_array_from_callback((n,), NamedSharding(self.mesh, P("data")),   # a global array, like
                                                lambda index: np.ones(n, bool)[index])      # the rows (multi-host)
            return rows, keep, fstate
        if self._filtered_jit is None:
            self._filtered_jit = jax.jit(self._filtered, donate_argnums=(1,))
        rows, keep, fstate, counts = self._filtered_jit(params, fstate, self._global_tokens())
        self._add_counts(counts)
        return rows.astype(dtype), keep, fstate

    def fill_until(self, params, buf: mixing.MixingBuffer, fstate: FilterState, rows: int):
        """Fill until the buffer holds at least ``rows`` valid rows."""
        while int(buf.count) < rows:
            buf, fstate = self.fill_once(params, buf, fstate)
        return buf, fstate

    def get_state(self) -> dict:
        state: dict[str, Any] = {"counts": self.counts}
        state["source"] = self.cache.get_state() if self.cache is not None else self.tokens.get_state()
        return state

    def set_state(self, state: dict) -> None:
        self.counts = state["counts"]
        (self.cache if self.cache is not None else self.tokens).set_state(state["source"])


def _process_part(arr: jax.Array, axis: int) -> np.ndarray:
    """This process's block of ``arr`` (sharded over 'data' along ``axis``) on the host: its addressable
    shards, each distinct index once (replicas over 'model' are the same rows), in index order."""
    shards: dict[int, Any] = {}
    for shard in arr.addressable_shards:
        shards.setdefault(shard.index[axis].start or 0, shard)
    return np.concatenate([np.asarray(shards[k].data) for k in sorted(shards)], axis=axis)
