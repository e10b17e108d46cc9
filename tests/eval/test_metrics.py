"""Metrics on hand-computable cases."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.eval.metrics import (
    ActivationStats,
    activation_batch_sums,
    ce_loss_recovered,
    kl_divergence,
    next_token_ce,
)


def _stats(x, x_hat, z, mask=None, batches=1):
    x, x_hat, z = (np.asarray(a, np.float32) for a in (x, x_hat, z))
    mask = np.ones(len(x), bool) if mask is None else np.asarray(mask)
    stats = ActivationStats(d_in=x.shape[1], d_sae=z.shape[1])
    for part in np.array_split(np.arange(len(x)), batches):
        stats.add(activation_batch_sums(jnp.asarray(x[part]), jnp.asarray(x_hat[part]),
                                        jnp.asarray(z[part]), jnp.asarray(mask[part])))
    return stats.summary(dense_threshold=0.5), stats


def test_hand_case_explained_variance_fvu_mse_cosine():
    # x = [[2,0],[0,0]]: mean [1,0], E|x|^2 = 2, |E x|^2 = 1 -> total variance 1
    # x_hat = [[1,0],[0,0]]: residuals 1 and 0 -> mse 0.5 -> EV 0.5, FVU 0.5
    # cosines: 1 (parallel) and 0 (zero vector) -> 0.5
    s, _ = _stats([[2, 0], [0, 0]], [[1, 0], [0, 0]], [[1, 0, 0], [0, 0, 0]])
    assert s["mse"] == pytest.approx(0.5)
    assert s["mse_per_dim"] == pytest.approx(0.25)
    assert s["explained_variance"] == pytest.approx(0.5)
    assert s["fvu"] == pytest.approx(0.5)
    assert s["cossim"] == pytest.approx(0.5)


def test_masked_tokens_do_not_count_and_batches_stream():
    x = [[2, 0], [0, 0], [100, -50]]
    x_hat = [[1, 0], [0, 0], [0, 0]]
    z = [[1, 0, 0], [0, 0, 0], [5, 5, 5]]
    s_masked, _ = _stats(x, x_hat, z, mask=[True, True, False])
    s_ref, _ = _stats(x[:2], x_hat[:2], z[:2])
    for key in ("mse", "explained_variance", "cossim", "l0_mean", "dead_fraction"):
        assert s_masked[key] == pytest.approx(s_ref[key])
    assert s_masked["n_tokens"] == 2
    rng = np.random.default_rng(0)
    x, x_hat = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    z = (rng.random((50, 6)) < 0.3) * 1.0
    one, _ = _stats(x, x_hat, z, batches=1)
    many, _ = _stats(x, x_hat, z, batches=7)
    for key in one:
        assert one[key] == pytest.approx(many[key], rel=1e-5)


def test_perfect_and_mean_reconstruction():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 8)) + 3.0
    z = np.ones((64, 4))
    perfect, _ = _stats(x, x, z)
    assert perfect["explained_variance"] == pytest.approx(1.0)
    assert perfect["fvu"] == pytest.approx(0.0, abs=1e-6)
    assert perfect["cossim"] == pytest.approx(1.0, abs=1e-6)
    # predicting the dataset mean explains exactly nothing
    mean_only, _ = _stats(x, np.broadcast_to(x.mean(0), x.shape), z)
    assert mean_only["explained_variance"] == pytest.approx(0.0, abs=1e-5)
    assert mean_only["fvu"] == pytest.approx(1.0, abs=1e-5)


def test_l0_distribution_dead_dense_density():
    # 4 tokens, 5 latents; L0 per token = 0, 1, 2, 3
    z = np.array([[0, 0, 0, 0, 0],
                  [1, 0, 0, 0, 0],
                  [1, 2, 0, 0, 0],
                  [1, 2, 3, 0, 0]], np.float32)
    x = np.ones((4, 2))
    s, stats = _stats(x, x, z)
    assert s["l0_mean"] == pytest.approx(1.5)
    assert s["l0_std"] == pytest.approx(math.sqrt(1.25))
    assert s["l0_p50"] == 1.0 and s["l0_p90"] == 3.0 and s["l0_p10"] == 0.0
    np.testing.assert_array_equal(stats.l0_hist, [1, 1, 1, 1, 0, 0])
    np.testing.assert_allclose(stats.density, [0.75, 0.5, 0.25, 0, 0])
    assert s["dead_fraction"] == pytest.approx(2 / 5)
    assert s["dense_fraction"] == pytest.approx(1 / 5)       # only latent 0 fires on > 50 %
    np.testing.assert_allclose(stats.log10_density[:3], np.log10([0.75, 0.5, 0.25]), rtol=1e-6)
    assert stats.log10_density[4] == pytest.approx(-10.0)


def test_next_token_ce_and_kl():
    V = 4
    ids = jnp.array([[0, 1, 2]])
    uniform = jnp.zeros((1, 3, V))
    np.testing.assert_allclose(next_token_ce(uniform, ids), np.full((1, 2), math.log(V)), rtol=1e-6)
    # a peaked distribution: logit 2 on the target, 0 elsewhere -> CE = log(e^2 + 3) - 2
    logits = jnp.zeros((1, 3, V)).at[0, 0, 1].set(2.0).at[0, 1, 2].set(2.0)
    np.testing.assert_allclose(next_token_ce(logits, ids), np.full((1, 2), math.log(math.e ** 2 + 3) - 2),
                               rtol=1e-6)
    np.testing.assert_allclose(kl_divergence(logits, logits), 0.0, atol=1e-7)
    # two classes: p = (1/2, 1/2), q = softmax(0, log 3) = (1/4, 3/4)
    p, q = jnp.array([0.0, 0.0]), jnp.array([0.0, math.log(3.0)])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert float(kl_divergence(p, q)) == pytest.approx(expected, rel=1e-6)


def test_ce_loss_recovered_endpoints():
    assert ce_loss_recovered(2.0, 2.0, 5.0) == 1.0        # spliced as good as clean
    assert ce_loss_recovered(2.0, 5.0, 5.0) == 0.0        # spliced as bad as ablated
    assert ce_loss_recovered(2.0, 3.5, 5.0) == pytest.approx(0.5)
    assert math.isnan(ce_loss_recovered(2.0, 2.5, 2.0))
