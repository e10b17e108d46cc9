"""The gated delta rule (the token mixer of Gated DeltaNet) in plain JAX: chunked and per-token forms.

Numerically the torch fallbacks of transformers' Qwen3.5, ``torch_chunk_gated_delta_rule`` and
``torch_recurrent_gated_delta_rule``, called with ``use_qk_l2norm_in_kernel=True``.

Shapes: B batch, T tokens, H heads (value heads: the caller repeats the key heads for GQA first), dk query/key
head dim, dv value head dim, C chunk size::

    query, key  [B, T, H, dk]   as projected (l2-normalised here; the query is also scaled by dk ** -0.5)
    value       [B, T, H, dv]
    g           [B, T, H]       log decay, <= 0: the state is multiplied by exp(g) at each token
    beta        [B, T, H]       write strength in (0, 1)
    state       [B, H, dk, dv]  float32; zero when ``initial_state`` is None

Per token: ``S <- exp(g) S``; ``S <- S + k (beta (v - k^T S))^T``; ``o = q^T S``.

The chunked form right-pads T to a multiple of C with zero tokens (g = beta = 0: exact no-ops) and scans over
chunks. In a chunk, with ``G = cumsum(g)`` and ``D[i, j] = exp(G_i - G_j)`` for i >= j, else 0 (the exponent
is masked to -inf before the exp, so it never overflows)::

    (I + strict_lower((beta k) k^T * D)) [U | W] = [beta v | beta exp(G) k]    unit-diagonal triangular solve
                                                                       (`_solve_unit_lower`)
    V' = U - W S
    O  = exp(G) q S + ((q k^T) * D) V'
    S <- exp(G_C) S + (exp(G_C - G) k)^T V'

All arithmetic is float32 with every matmul at ``Precision.HIGHEST``; the output is cast to ``value.dtype``,
the state stays float32. Per scan step nothing larger than ``[B, H, C, C]`` is built, so memory is O(T * C).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

_einsum = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)


def chunk_gated_delta_rule(query, key, value, g, beta, *, chunk_size=64, initial_state=None):
    """query, key [B, T, H, dk]; value [B, T, H, dv]; g, beta [B, T, H] ->
    (out [B, T, H, dv] in value.dtype, final_state [B, H, dk, dv] float32)."""
    q, k, v, g32, beta32 = _prepare(query, key, value, g, beta)
    b, t, h, _ = k.shape
    pad = -t % chunk_size
    n = (t + pad) // chunk_size

    def chunks(x):  # [B, T, H, ...] -> [N, B, H, C, ...]
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        x = x.reshape(b, n, chunk_size, h, *x.shape[3:])
        return jnp.moveaxis(x, (1, 2), (0, 3))

    state = _initial_state(initial_state, k, v)
    state, out = jax.lax.scan(_chunk_step, state, tuple(map(chunks, (q, k, v, g32, beta32))))
    out = jnp.moveaxis(out, (0, 3), (1, 2)).reshape(b, n * chunk_size, h, -1)[:, :t]  # [B, T, H, dv]
    return out.astype(value.dtype), state


def recurrent_gated_delta_rule(query, key, value, g, beta, *, initial_state=None):
    """Same shapes and return as ``chunk_gated_delta_rule``, one token at a time (single-token decode)."""
    inputs = _prepare(query, key, value, g, beta)
    state = _initial_state(initial_state, inputs[1], inputs[2])
    state, out = jax.lax.scan(_token_step, state, tuple(jnp.moveaxis(x, 1, 0) for x in inputs))
    return jnp.moveaxis(out, 0, 1).astype(value.dtype), state  # [B, T, H, dv]


def _l2norm(x):
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-6)


def _prepare(query, key, value, g, beta):
    """float32 copies; query and key l2-normalised over their last axis, query scaled by dk ** -0.5."""
    q, k, v, g, beta = (jnp.asarray(x, jnp.float32) for x in (query, key, value, g, beta))
    q, k = _l2norm(q), _l2norm(k)
    return q * q.shape[-1] ** -0.5, k, v, g, beta


def _initial_state(initial_state, k, v):
    if initial_state is None:
        return jnp.zeros((k.shape[0], k.shape[2], k.shape[3], v.shape[3]), jnp.float32)  # [B, H, dk, dv]
    return jnp.asarray(initial_state, jnp.float32)


def _token_step(state, token):
    q, k, v, g, beta = token  # [B, H, dk], [B, H, dk], [B, H, dv], [B, H], [B, H]
    state = state * jnp.exp(g)[..., None, None]  # [B, H, dk, dv]
    delta = beta[..., None] * (v - _einsum("bhk,bhkv->bhv", k, state))  # [B, H, dv]
    state = state + k[..., :, None] * delta[..., None, :]
    return state, _einsum("bhk,bhkv->bhv", q, state)


def _forward_substitution(system, rhs):
    """x with (I + strict_lower(system)) x = rhs, row by row (``lax.fori_loop`` over the C rows)."""
    c = system.shape[-1]
    strict = jnp.where(jnp.tril(jnp.ones((c, c), bool), -1), system, 0)  # [B, H, C, C]

    def row(i, x):  # rows >= i of x are still 0, so the product reads only the solved rows j < i
        return x.at[..., i, :].set(rhs[..., i, :] - _einsum("bhj,bhjd->bhd", strict[..., i, :], x))

    return jax.lax.fori_loop(0, c, row, jnp.zeros_like(rhs))


def _solve_unit_lower(system, rhs):
    """Unit-diagonal lower-triangular solve of ``system`` [B, H, C, C] (strict lower part read) for ``rhs``
    [B, H, C, D]. XLA's triangular solve on TPU / GPU; forward substitution on CPU, where jaxlib's LAPACK
    trsm deadlocks when several CPU devices run it at once (each call waits on sub-tasks it queued on the
    shared intra-op thread pool, whose threads are all held by such calls: seen on 8 forced host devices)."""
    return jax.lax.platform_dependent(
        system, rhs, cpu=_forward_substitution,
        default=lambda a, b: solve_triangular(a, b, lower=True, unit_diagonal=True))


def _chunk_step(state, chunk):
    q, k, v, g, beta = chunk  # [B, H, C, dk], [B, H, C, dk], [B, H, C, dv], [B, H, C], [B, H, C]
    c, dv = v.shape[-2:]
    cum = jnp.cumsum(g, axis=-1)  # [B, H, C]
    exp_cum = jnp.exp(cum)[..., None]  # [B, H, C, 1]
    causal = jnp.tril(jnp.ones((c, c), bool))
    decay = jnp.exp(jnp.where(causal, cum[..., :, None] - cum[..., None, :], -jnp.inf))  # [B, H, C, C]
    k_beta = k * beta[..., None]  # [B, H, C, dk]
    system = _einsum("bhik,bhjk->bhij", k_beta, k) * decay  # [B, H, C, C]; the solve reads its strict lower part
    rhs = jnp.concatenate([v * beta[..., None], k_beta * exp_cum], axis=-1)  # [B, H, C, dv + dk]
    solved = _solve_unit_lower(system, rhs)  # [B, H, C, dv + dk]
    u, w = solved[..., :dv], solved[..., dv:]  # [B, H, C, dv], [B, H, C, dk]
    v_new = u - _einsum("bhck,bhkv->bhcv", w, state)  # [B, H, C, dv]
    attn = _einsum("bhik,bhjk->bhij", q, k) * decay  # [B, H, C, C]
    out = (_einsum("bhck,bhkv->bhcv", q * exp_cum, state)
           + _einsum("bhij,bhjv->bhiv", attn, v_new))  # [B, H, C, dv]
    last = cum[..., -1:]  # [B, H, 1]
    k_tail = k * jnp.exp(last - cum)[..., None]  # [B, H, C, dk]
    state = state * jnp.exp(last)[..., None] + _einsum("bhck,bhcv->bhkv", k_tail, v_new)  # [B, H, dk, dv]
    return state, out
