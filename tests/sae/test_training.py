"""Init, decoder-norm handling around optimizer steps, dead latents, BatchTopK/JumpReLU thresholds, NaN
policy and input errors."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.sae import (
    SAEConfig,
    after_update,
    before_update,
    dead_mask,
    geometric_median,
    init_sae,
    init_sae_from_sample,
    init_tokens_since_fired,
    sae_loss,
    shrunk_median,
    trainable_mask,
    update_tokens_since_fired,
)

from . import reference


def _data(n=64, d_in=8, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, d_in)) * 2 + 3


def _train(cfg, steps, x, lr=1e-2, dead=None):
    sae = init_sae(cfg, jax.random.key(1), x)
    opt = optax.masked(optax.adam(lr), trainable_mask(sae))
    opt_state = opt.init(sae)

    @jax.jit
    def step(sae, opt_state):
        (loss, terms), grads = jax.value_and_grad(lambda s: sae_loss(s, x, dead_mask=dead), has_aux=True)(sae)
        grads = before_update(sae, grads)
        updates, opt_state = opt.update(grads, opt_state, sae)
        sae = after_update(optax.apply_updates(sae, updates), terms)
        return sae, opt_state, loss, terms, grads

    history = []
    for _ in range(steps):
        sae, opt_state, loss, terms, grads = step(sae, opt_state)
        history.append((float(loss), terms, grads))
    return sae, history


def test_geometric_median_matches_brute_force_and_resists_outliers():
    pts = jnp.concatenate([jax.random.normal(jax.random.key(0), (50, 3)), jnp.full((5, 3), 100.0)])
    med = geometric_median(pts)
    cost = lambda y: float(jnp.sum(jnp.linalg.norm(pts - y, axis=-1)))  # noqa: E731
    for delta in jnp.eye(3) * 1e-2:
        assert cost(med) <= cost(med + delta) + 1e-4 and cost(med) <= cost(med - delta) + 1e-4
    assert float(jnp.linalg.norm(med)) < 1.0 < float(jnp.linalg.norm(pts.mean(0)))


def test_shrunk_median_drops_a_centre_inside_the_cloud_and_keeps_a_large_offset():
    """docs/sae.md: b_dec = m * max(0, 1 - E||x - m||^2 / ||m||^2), m the geometric median; the default."""
    cloud = jax.random.normal(jax.random.key(0), (400, 8)) + 0.3  # centre norm 0.85, spread 8
    np.testing.assert_array_equal(shrunk_median(cloud), 0.0)
    offset = jnp.arange(1.0, 9.0) * 10.0  # norm 168: kept at 1 - spread / ||m||^2, about 0.9997
    m = geometric_median(cloud + offset)
    spread = jnp.mean(jnp.sum((cloud + offset - m) ** 2, -1))
    np.testing.assert_allclose(shrunk_median(cloud + offset), m * (1 - spread / jnp.sum(m * m)), rtol=1e-6)
    assert 0.999 < float(jnp.linalg.norm(shrunk_median(cloud + offset)) / jnp.linalg.norm(m)) < 1.0
    assert SAEConfig(architecture="topk", d_in=8, d_sae=16, k=2).b_dec_init == "shrunk_median"
    sae = init_sae(SAEConfig(architecture="topk", d_in=8, d_sae=16, k=2), jax.random.key(1), cloud + offset)
    np.testing.assert_allclose(sae.b_dec, shrunk_median(cloud + offset), rtol=1e-6)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu", "relu"])
def test_default_init_has_the_documented_scales(arch):
    """docs/sae.md: unit-norm decoders start at norm 1 with encoder columns at ENCODER_INIT_NORM (0.1) along
    the same directions; relu ties W_enc = W_dec^T at norm 0.1; explicit norms are honoured."""
    from qwen_sae_jax.sae.config import ENCODER_INIT_NORM

    cfg = SAEConfig(architecture=arch, d_in=16, d_sae=48, k=4 if arch in ("topk", "batchtopk") else None)
    sae = init_sae(cfg, jax.random.key(1), _data(d_in=16))
    dec_norm, enc_norm = (1.0, ENCODER_INIT_NORM) if arch != "relu" else (0.1, 0.1)
    assert ENCODER_INIT_NORM == 0.1
    np.testing.assert_allclose(jnp.linalg.norm(sae.W_dec, axis=-1), dec_norm, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(sae.W_enc, axis=0), enc_norm, rtol=1e-5)
    np.testing.assert_allclose(sae.W_enc * (dec_norm / enc_norm), sae.W_dec.T, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(sae.b_enc, 0)
    custom = init_sae(cfg.replace(encoder_init_norm=0.5, decoder_init_norm=2.0), jax.random.key(1))
    np.testing.assert_allclose(jnp.linalg.norm(custom.W_enc, axis=0), 0.5, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(custom.W_dec, axis=-1), 2.0, rtol=1e-5)
    with pytest.raises(UserError, match="encoder_init_norm must be > 0"):
        cfg.replace(encoder_init_norm=0.0)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu", "relu"])
def test_default_input_scale_is_unit_norm_for_jumprelu_only(arch):
    """docs/sae.md: JumpReLU normalises its inputs to mean norm 1 by default (the scale of its threshold and
    bandwidth defaults); the others keep raw inputs unless asked, and then scale to mean norm sqrt(d_in)."""
    x = 7.0 * _data(d_in=16)
    cfg = SAEConfig(architecture=arch, d_in=16, d_sae=48, k=4 if arch in ("topk", "batchtopk") else None)
    sae = init_sae(cfg, jax.random.key(1), x)
    mean_norm = float(jnp.mean(jnp.linalg.norm(x * sae.act_scale, axis=-1)))
    if arch == "jumprelu":
        assert cfg.resolved_normalize_activations and mean_norm == pytest.approx(1.0, rel=1e-5)
        assert float(init_sae(cfg, jax.random.key(1)).act_scale) == 1.0   # no sample: nothing to scale by
        assert float(init_sae(cfg.replace(normalize_activations=False), jax.random.key(1), x).act_scale) == 1.0
    else:
        assert not cfg.resolved_normalize_activations and float(sae.act_scale) == 1.0
        on = init_sae(cfg.replace(normalize_activations=True), jax.random.key(1), x)
        assert float(jnp.mean(jnp.linalg.norm(x * on.act_scale, axis=-1))) == pytest.approx(4.0, rel=1e-5)


def test_init_ties_encoder_to_decoder_and_sets_scale():
    x = _data()
    cfg = SAEConfig(architecture="relu", d_in=8, d_sae=24, normalize_activations=True, b_dec_init="mean")
    sae = init_sae(cfg, jax.random.key(0), x)
    np.testing.assert_array_equal(sae.W_enc, sae.W_dec.T)
    np.testing.assert_allclose(jnp.linalg.norm(sae.W_dec, axis=-1), 0.1, rtol=1e-5)
    np.testing.assert_allclose(jnp.mean(jnp.linalg.norm(x * sae.act_scale, axis=-1)), np.sqrt(8), rtol=1e-5)
    np.testing.assert_allclose(sae.b_dec, jnp.mean(x * sae.act_scale, 0), rtol=1e-5)
    with pytest.raises(UserError, match="needs x_sample"):
        init_sae(cfg, jax.random.key(0))
    # the traceable core gives the same SAE under jit and vmap (the trainer initialises groups that way)
    for other_cfg in (cfg, *(dataclasses.replace(cfg, b_dec_init=i) for i in ("geometric_median", "shrunk_median"))):
        eager = init_sae(other_cfg, jax.random.key(0), x)
        traced = jax.jit(lambda k, s: init_sae_from_sample(other_cfg, k, s))(jax.random.key(0), x)
        stacked = jax.vmap(lambda k, s: init_sae_from_sample(other_cfg, k, s))(jax.random.key(0)[None], x[None])
        for leaf in ("W_enc", "W_dec", "b_dec", "act_scale"):
            np.testing.assert_allclose(getattr(traced, leaf), getattr(eager, leaf), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(getattr(stacked, leaf)[0], getattr(eager, leaf), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu"])
def test_decoder_rows_stay_unit_norm_after_optimizer_steps(arch):
    cfg = SAEConfig(architecture=arch, d_in=8, d_sae=24, k=3 if "topk" in arch else None)
    sae, history = _train(cfg, 5, _data())
    np.testing.assert_allclose(jnp.linalg.norm(sae.W_dec, axis=-1), 1.0, rtol=1e-5)
    assert history[-1][0] < history[0][0]
    _, terms, grads = history[-1]
    projected = before_update(sae, grads)
    assert float(jnp.max(jnp.abs(jnp.sum(projected.W_dec * sae.W_dec, -1)))) < 1e-5


def test_relu_decoder_is_not_renormalised_and_loss_falls():
    cfg = SAEConfig(architecture="relu", d_in=8, d_sae=24, l1_coefficient=0.1)
    sae, history = _train(cfg, 5, _data())
    assert not np.allclose(jnp.linalg.norm(sae.W_dec, axis=-1), 0.1, rtol=1e-4)
    assert history[-1][0] < history[0][0]


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_auxk_is_zero_when_nothing_is_dead(arch):
    cfg = SAEConfig(architecture=arch, d_in=8, d_sae=24, k=3)
    sae = init_sae(cfg, jax.random.key(0), _data())
    _, none_dead = sae_loss(sae, _data(seed=1), dead_mask=jnp.zeros(24, bool))
    _, no_mask = sae_loss(sae, _data(seed=1))
    _, some_dead = sae_loss(sae, _data(seed=1), dead_mask=jnp.arange(24) < 12)
    assert float(none_dead.aux) == 0.0 and float(no_mask.aux) == 0.0
    assert float(some_dead.aux) > 0.0


def test_jumprelu_threshold_gradient_is_finite_and_moves_thresholds():
    cfg = SAEConfig(architecture="jumprelu", d_in=8, d_sae=24, jumprelu_bandwidth=0.5, jumprelu_init_threshold=0.3,
                    l0_coefficient=0.5)
    sae0 = init_sae(cfg, jax.random.key(1), _data())
    sae, history = _train(cfg, 5, _data())
    g = history[0][2].threshold
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.max(jnp.abs(g))) > 0
    assert float(jnp.max(jnp.abs(sae.threshold - sae0.threshold))) > 1e-3


def test_batchtopk_threshold_tracks_the_smallest_selected_activation():
    cfg = SAEConfig(architecture="batchtopk", d_in=8, d_sae=24, k=3, batchtopk_threshold_lr=0.5)
    x = _data()
    sae, history = _train(cfg, 6, x)
    assert float(sae.threshold[0]) > 0 and bool(jnp.all(sae.threshold == sae.threshold[0]))
    # the first batch's target is the smallest activation the batch-global top-(k * B) of the initial SAE keeps
    # (the dense reference); the threshold is the EMA (rate 0.5, from 0) of every step's target
    initial = init_sae(cfg, jax.random.key(1), x)
    _, ref = reference.batchtopk({f: getattr(initial, f) for f in ("W_enc", "b_enc", "W_dec", "b_dec", "act_scale")},
                                 x, cfg)
    z = np.asarray(ref["z"])
    assert (z > 0).sum() == 3 * 64
    np.testing.assert_allclose(float(history[0][1].min_active), z[z > 0].min(), rtol=1e-5)
    ema = 0.0
    for _, terms, _ in history:
        assert float(terms.min_active) > 0
        ema = 0.5 * ema + 0.5 * float(terms.min_active)
    np.testing.assert_allclose(np.asarray(sae.threshold), ema, rtol=1e-5)
    # the learned threshold reproduces roughly k active latents per token at inference
    l0 = float(jnp.mean(jnp.sum(sae.encode(_data()) > 0, -1)))
    assert 1.0 <= l0 <= 9.0


def test_dead_latent_counter():
    cfg = SAEConfig(architecture="topk", d_in=4, d_sae=6, k=1, dead_tokens_threshold=100)
    counter = init_tokens_since_fired(cfg)
    fired = jnp.array([True, False, False, False, False, True])
    counter = update_tokens_since_fired(counter, fired, 60, cfg)
    assert not bool(jnp.any(dead_mask(counter, cfg)))
    counter = update_tokens_since_fired(counter, ~fired, 60, cfg)  # [60, 0, 0, 0, 0, 60]
    counter = update_tokens_since_fired(counter, jnp.zeros(6, bool), 50, cfg)
    np.testing.assert_array_equal(counter, [100, 50, 50, 50, 50, 100])
    np.testing.assert_array_equal(dead_mask(counter, cfg), [True, False, False, False, False, True])
    counter = update_tokens_since_fired(counter, jnp.zeros(6, bool), 2**31 - 1, cfg)
    assert int(counter.max()) == 100  # saturates, never overflows


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu", "relu"])
def test_nan_rows_are_skipped_and_counted_never_reaching_parameters(arch):
    cfg = SAEConfig(architecture=arch, d_in=8, d_sae=24, k=3 if "topk" in arch else None)
    sae = init_sae(cfg, jax.random.key(0), _data())
    x = _data(16, seed=3)
    bad = x.at[2, 1].set(jnp.nan).at[5, 0].set(jnp.inf)
    loss_fn = lambda s, data: sae_loss(s, data, dead_mask=jnp.arange(24) < 4)  # noqa: E731
    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    (loss_bad, terms_bad), grads_bad = grad_fn(sae, bad)
    clean = jnp.delete(x, jnp.array([2, 5]), axis=0)
    (loss_clean, terms_clean), grads_clean = grad_fn(sae, clean)
    assert int(terms_bad.n_nonfinite) == 2 and int(terms_clean.n_nonfinite) == 0
    if arch != "batchtopk":  # batchtopk's batch budget is k * B, so skipped rows change the selection
        np.testing.assert_allclose(loss_bad, loss_clean, rtol=1e-5)
    for leaf in jax.tree.leaves(grads_bad):
        assert bool(jnp.all(jnp.isfinite(leaf)))


def test_device_inputs_are_not_synced_for_the_nan_check_unless_debugging():
    """A device array is not pulled to the host to look for NaN (NaN in, NaN out for that row only, as under
    jit); with jax_debug_nans the eager check runs for device arrays too."""
    cfg = SAEConfig(architecture="topk", d_in=8, d_sae=24, k=3, hook_name="layers.2")
    sae = init_sae(cfg, jax.random.key(0))
    x = jnp.ones((4, 8)).at[1, 1].set(jnp.nan)
    z = np.asarray(sae.encode(x))
    assert np.isnan(z[1]).any() and np.isfinite(np.delete(z, 1, axis=0)).all()
    with jax.transfer_guard_device_to_host("disallow"):
        sae.encode(jnp.ones((4, 8)))   # no implicit device-to-host transfer on the eager path
    jax.config.update("jax_debug_nans", True)
    try:
        with pytest.raises(UserError, match="encode: 1 activation row"):
            sae.encode(x)
    finally:
        jax.config.update("jax_debug_nans", False)


def test_bad_inputs_raise_clear_errors():
    cfg = SAEConfig(architecture="topk", d_in=8, d_sae=24, k=3, hook_name="layers.2")
    sae = init_sae(cfg, jax.random.key(0))
    with pytest.raises(UserError, match="d_in=8"):
        sae.encode(jnp.ones((4, 7)))
    with pytest.raises(UserError, match="d_in=8"):
        sae_loss(sae, jnp.ones((4, 9)))
    host = np.ones((4, 8), np.float32)
    host[1, 1] = np.nan
    with pytest.raises(UserError, match="encode: 1 activation row"):   # host input: checked for free
        sae.encode(host)
    with pytest.raises(UserError, match="NaN or inf"):
        sae(np.where(np.arange(8) == 0, np.inf, 1.0)[None].repeat(4, 0))
    with pytest.raises(UserError, match="d_sae=24"):
        sae.decode(jnp.ones((4, 23)))
    with pytest.raises(UserError, match="dead_mask"):
        sae_loss(sae, jnp.ones((4, 8)), dead_mask=jnp.ones(23, bool))
    with pytest.raises(UserError, match="implementation"):
        sae.encode(jnp.ones((4, 8)), implementation="fast")


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_bfloat16_parameters_train_with_finite_bfloat16_gradients(arch):
    cfg = SAEConfig(architecture=arch, d_in=8, d_sae=24, k=3 if arch == "topk" else None, dtype="bfloat16")
    x = _data()
    sae = init_sae(cfg, jax.random.key(0), x)
    (loss, terms), grads = jax.jit(jax.value_and_grad(
        lambda s: sae_loss(s, x, dead_mask=jnp.arange(24) < 6), has_aux=True))(sae)
    assert loss.dtype == jnp.float32 and bool(jnp.isfinite(loss)) and 0 < float(terms.fvu) < 10
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        g = getattr(grads, name)
        assert g.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(g.astype(jnp.float32))))
    assert sae(x).dtype == jnp.bfloat16
