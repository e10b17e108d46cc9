"""Position filtering: special tokens, first position, NaN/inf and norm outliers, one mask for all hooks."""
import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.data.filter import filter_positions, init_filter_state


def test_every_reason_is_dropped_and_counted():
    rng = np.random.default_rng(0)
    H, B, T, D = 2, 2, 8, 4
    x = rng.normal(size=(H, B, T, D)).astype(np.float32)
    tokens = rng.integers(10, 20, size=(B, T)).astype(np.int32)
    tokens[0, 3] = 1                       # special token
    x[1, 1, 5, 2] = np.nan                 # NaN at hook 1 only
    x[0, 0, 6] *= 1000.0                   # norm outlier at hook 0
    keep, state, counts = filter_positions(jnp.asarray(x), jnp.asarray(tokens), init_filter_state(H),
                                           jnp.asarray([1, 2]), True, 10.0)
    keep = np.asarray(keep).reshape(B, T)
    expected = np.ones((B, T), bool)
    expected[:, 0] = False
    expected[0, 3] = expected[1, 5] = expected[0, 6] = False
    np.testing.assert_array_equal(keep, expected)
    assert int(counts.special) == 1 and int(counts.first) == 2 and int(counts.kept) == expected.sum()
    np.testing.assert_array_equal(np.asarray(counts.nonfinite), [0, 1])
    np.testing.assert_array_equal(np.asarray(counts.outlier), [1, 0])
    norms = np.linalg.norm(x, axis=-1)
    candidate = expected.copy()
    candidate[0, 6] = True                 # the outlier still counts toward the median
    np.testing.assert_allclose(np.asarray(state.median_norm), np.median(norms[:, candidate], axis=-1), rtol=1e-5)
    # the next batch is judged against the running median, which moves by an EMA
    _, state2, _ = filter_positions(jnp.asarray(x * 2), jnp.asarray(tokens), state, jnp.asarray([1, 2]), True, 10.0)
    np.testing.assert_allclose(np.asarray(state2.median_norm), 1.1 * np.asarray(state.median_norm), rtol=1e-5)


def test_filters_can_be_switched_off():
    x = jnp.ones((1, 1, 4, 3))
    tokens = jnp.asarray([[1, 5, 5, 5]], jnp.int32)
    keep, _, counts = filter_positions(x, tokens, init_filter_state(1), None, False, None)
    assert bool(keep.all()) and int(counts.kept) == 4
