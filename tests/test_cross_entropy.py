"""cross_entropy.token_nll / next_token_nll against plain log_softmax + take_along_axis (values and gradients)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.cross_entropy import next_token_nll, token_nll


def reference_nll(logits, targets):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


@pytest.fixture
def case():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 6, 17)) * 4, jnp.float32)     # [B, T, V]
    targets = jnp.asarray(rng.integers(0, 17, size=(3, 6)), jnp.int32)
    weights = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)            # an arbitrary cotangent
    return logits, targets, weights


def test_values_and_gradient_match_log_softmax(case):
    logits, targets, weights = case
    np.testing.assert_allclose(token_nll(logits, targets), reference_nll(logits, targets), atol=1e-5)
    got = jax.grad(lambda x: jnp.sum(token_nll(x, targets) * weights))(logits)
    want = jax.grad(lambda x: jnp.sum(reference_nll(x, targets) * weights))(logits)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_bfloat16_logits_give_float32_loss_and_bfloat16_gradient(case):
    logits, targets, _ = case
    low = logits.astype(jnp.bfloat16)
    nll = token_nll(low, targets)
    assert nll.dtype == jnp.float32
    np.testing.assert_allclose(nll, reference_nll(low, targets), atol=1e-5)
    grad = jax.grad(lambda x: jnp.sum(token_nll(x, targets)))(low)
    assert grad.dtype == jnp.bfloat16
    want = jax.grad(lambda x: jnp.sum(reference_nll(x, targets)))(logits)
    np.testing.assert_allclose(np.asarray(grad, np.float32), want, atol=1e-2)


def test_next_token_nll_shifts_and_gives_the_last_position_nothing(case):
    logits, ids, weights = case
    nll = next_token_nll(logits, ids)
    assert nll.shape == ids.shape
    np.testing.assert_allclose(nll[:, :-1], reference_nll(logits[:, :-1], ids[:, 1:]), atol=1e-5)
    np.testing.assert_array_equal(nll[:, -1], 0.0)
    grad = jax.grad(lambda x: jnp.sum(next_token_nll(x, ids) * weights))(logits)
    np.testing.assert_array_equal(grad[:, -1], 0.0)
    want = jax.grad(lambda x: jnp.sum(reference_nll(x[:, :-1], ids[:, 1:]) * weights[:, :-1]))(logits)
    np.testing.assert_allclose(grad, want, atol=1e-6)


def test_jitted_gradient_has_no_scatter(case):
    # the point of the custom gradient: no zero [.., V] array scattered into (autodiff of take_along_axis)
    logits, targets, _ = case
    hlo = jax.jit(jax.grad(lambda x: jnp.sum(token_nll(x, targets)))).lower(logits).as_text()
    assert "scatter" not in hlo
    ref = jax.jit(jax.grad(lambda x: jnp.sum(reference_nll(x, targets)))).lower(logits).as_text()
    assert "scatter" in ref
