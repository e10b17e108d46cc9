"""The sparse building blocks against plain dense JAX: gathers, scatter-adds, custom_vjp gradients,
the grouped exact top-k and the augmented (bias-folded) encoder matmul."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from qwen_sae_jax.sae import sparse
from qwen_sae_jax.sae.select import grouped_top_k


def _dense(weights, idx, width):
    rows = jnp.arange(idx.shape[0])[:, None]
    return jnp.zeros((idx.shape[0], width)).at[rows, idx].add(weights)


@pytest.mark.parametrize("batch, k, n, d, chunk_elements", [(6, 3, 10, 5, 1 << 22), (12, 4, 9, 7, 4 * 7 * 3)])
def test_gather_scatter_and_decode_gradients_match_dense(batch, k, n, d, chunk_elements, monkeypatch):
    monkeypatch.setattr(sparse, "_CHUNK_ELEMENTS", chunk_elements)  # second case: 4 scan chunks of 3 rows
    keys = jax.random.split(jax.random.key(batch), 4)
    w = jax.random.normal(keys[0], (batch, k))
    idx = jax.random.randint(keys[1], (batch, k), 0, n)  # duplicates included
    table = jax.random.normal(keys[2], (n, d))
    vecs = jax.random.normal(keys[3], (batch, d))
    z = _dense(w, idx, n)
    np.testing.assert_allclose(sparse.gather_rows_weighted(w, idx, table), z @ table, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sparse.scatter_add_outer(w, idx, vecs, n), z.T @ vecs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sparse.segment_sum_flat(w, idx, n), z.sum(0), rtol=1e-5, atol=1e-5)

    loss = lambda w, t: jnp.sum(jnp.sin(sparse.sparse_decode(w, idx, t)))  # noqa: E731
    ref = lambda w, t: jnp.sum(jnp.sin(_dense(w, idx, n) @ t))  # noqa: E731
    for got, want in zip(jax.grad(loss, (0, 1))(w, table), jax.grad(ref, (0, 1))(w, table)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_sparse_encoder_acts_gradients_including_x():
    batch, d_in, d_sae, k = 5, 6, 20, 4
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(keys[0], (batch, d_in))
    W = jax.random.normal(keys[1], (d_in, d_sae))
    b = jax.random.normal(keys[2], (d_sae,))
    b_dec = jax.random.normal(keys[3], (d_in,))

    def ref(x, W, b, b_dec):
        vals, _ = lax.top_k((x - b_dec) @ W + b, k)
        return jnp.sum(jnp.cos(jax.nn.relu(vals)) * jnp.arange(1, k + 1))

    def ours(x, W, b, b_dec):
        pre = lax.stop_gradient((x - b_dec) @ W + b)
        vals, idx = lax.top_k(pre, k)
        acts = sparse.sparse_encoder_acts(jax.nn.relu(vals), idx, x, W, b, b_dec, True)
        return jnp.sum(jnp.cos(acts) * jnp.arange(1, k + 1))

    for got, want in zip(jax.grad(ours, (0, 1, 2, 3))(x, W, b, b_dec), jax.grad(ref, (0, 1, 2, 3))(x, W, b, b_dec)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_transpose_materialized():
    m = jax.random.normal(jax.random.key(0), (3 * 8, 5))
    np.testing.assert_array_equal(jax.jit(lambda a: sparse.transpose_materialized(a, block=8))(m), m.T)
    np.testing.assert_array_equal(sparse.transpose_materialized(m[:7], block=8), m[:7].T)  # fallback


@pytest.mark.parametrize("batch, n, k", [(7, 512, 8), (5, 1024, 1), (4, 512, 16), (3, 100, 5)])
def test_grouped_top_k_is_exact(batch, n, k):
    pre = jax.random.normal(jax.random.key(n + k), (batch, n))
    bias = jax.random.normal(jax.random.key(n), (n,))
    vals, idx = grouped_top_k(pre, bias, k)
    ref_vals, ref_idx = lax.top_k(pre + bias, k)
    np.testing.assert_array_equal(vals, ref_vals)
    np.testing.assert_array_equal(idx, ref_idx)
    # a row whose largest entries all sit in one group (the case a per-group top-1 would miss)
    clustered = jnp.zeros((1, n)).at[0, 32:32 + k].set(jnp.arange(k, 0, -1.0))
    zero = jnp.zeros((n,))
    np.testing.assert_array_equal(grouped_top_k(clustered, zero, k)[1], lax.top_k(clustered, k)[1])
    # the bias alone decides (pre all equal): the bias's own top-k
    np.testing.assert_array_equal(grouped_top_k(jnp.ones((2, n)), bias, k)[1][0], lax.top_k(bias, k)[1])


def test_grouped_top_k_excludes_minus_inf_bias():
    """AuxK passes -inf bias for live latents: they are never selected while finite candidates remain."""
    n, k = 512, 8
    pre = jax.random.normal(jax.random.key(3), (4, n))
    dead = jnp.arange(n) % 7 == 0
    bias = jnp.where(dead, 0.0, -jnp.inf)
    _, idx = grouped_top_k(pre, bias, k)
    assert bool(jnp.all(dead[idx]))
    np.testing.assert_array_equal(idx, lax.top_k(jnp.where(dead, pre, -jnp.inf), k)[1])
