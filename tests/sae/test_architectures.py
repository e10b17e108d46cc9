"""Every architecture against the dense references in reference.py: latents, reconstructions, every loss
term and every gradient, on fresh random inputs and several shapes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.sae import SAEConfig, init_sae, sae_loss

from . import reference

PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")

# (d_in, d_sae, k, batch): k=1, k=d_sae, d_sae not a multiple of any tile (200, 37)
SHAPES = [(8, 32, 1, 16), (8, 32, 32, 8), (16, 200, 7, 12), (12, 37, 5, 10)]


def _random_sae(cfg, seed):
    key_init, key_perturb, key_x = jax.random.split(jax.random.key(seed), 3)
    x_sample = jax.random.normal(key_x, (64, cfg.d_in)) * 3 + 1
    sae = init_sae(cfg, key_init, x_sample)
    # move away from the tied init so W_enc, W_dec, b_enc, threshold all matter independently
    keys = jax.random.split(key_perturb, 4)
    sae = sae.replace(
        W_enc=sae.W_enc + 0.3 * jax.random.normal(keys[0], sae.W_enc.shape),
        b_enc=0.1 * jax.random.normal(keys[1], sae.b_enc.shape),
        W_dec=sae.W_dec * jax.random.uniform(keys[2], (cfg.d_sae, 1), minval=0.5, maxval=1.5),
    )
    if cfg.architecture == "jumprelu":
        sae = sae.replace(threshold=jax.random.uniform(keys[3], (cfg.d_sae,), minval=0.0, maxval=0.5))
    return sae


def _params(sae):
    return {name: getattr(sae, name) for name in PARAMS + ("act_scale",)}


def _check(arch, d_in, d_sae, k, batch, seed, dead_fraction=0.0, **cfg_kwargs):
    cfg = SAEConfig(architecture=arch, d_in=d_in, d_sae=d_sae, k=k if "topk" in arch else None, **cfg_kwargs)
    sae = _random_sae(cfg, seed)
    x = jax.random.normal(jax.random.key(seed + 100), (batch, d_in)) * 3 + 1
    dead = None
    if dead_fraction:
        dead = jax.random.uniform(jax.random.key(seed + 200), (d_sae,)) < dead_fraction
    ref_fn = reference.LOSSES[arch]

    (loss, terms), grads = jax.jit(jax.value_and_grad(
        lambda s: sae_loss(s, x, dead_mask=dead, implementation="xla"), has_aux=True))(sae)
    (ref_loss, ref_terms), ref_grads = jax.jit(jax.value_and_grad(
        lambda p: ref_fn(p, x, cfg, dead), has_aux=True))(_params(sae))

    np.testing.assert_allclose(loss, ref_loss, rtol=1e-4, atol=1e-5)
    for name in ("mse", "fvu", "aux") + (("sparsity",) if "sparsity" in ref_terms else ()):
        np.testing.assert_allclose(getattr(terms, name), ref_terms[name], rtol=1e-4, atol=1e-5, err_msg=name)
    z_ref = ref_terms["z"]
    np.testing.assert_allclose(terms.l0, jnp.mean(jnp.sum(z_ref > 0, -1)), rtol=1e-6)
    np.testing.assert_array_equal(terms.fired, jnp.any(z_ref > 0, 0))
    for name in PARAMS:
        g, g_ref = getattr(grads, name), ref_grads[name]
        scale = float(jnp.max(jnp.abs(g_ref))) + 1e-6
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4 * scale, err_msg=f"d loss / d {name}")
    assert float(jnp.abs(grads.act_scale)) == 0.0
    return sae, x, z_ref, ref_terms, grads


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu", "relu"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_loss_and_gradients_match_dense_reference(arch, shape):
    _check(arch, *shape, seed=sum(shape))


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
@pytest.mark.parametrize("dead_fraction", [0.3, 0.95])
def test_auxk_matches_reference_with_dead_latents(arch, dead_fraction):
    _, _, _, ref_terms, grads = _check(arch, 16, 96, 4, 12, seed=7, dead_fraction=dead_fraction, k_aux=10)
    assert float(ref_terms["aux"]) > 0


def test_jumprelu_pre_act_loss_matches_reference():
    _, _, _, ref_terms, _ = _check("jumprelu", 8, 40, None, 16, seed=3, dead_fraction=0.5, pre_act_loss_coefficient=0.3)
    assert float(ref_terms["aux"]) > 0


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu", "relu"])
def test_without_b_dec_on_input_and_with_act_scale(arch):
    _check(arch, 8, 48, 3, 10, seed=11, apply_b_dec_to_input=False, normalize_activations=True)
    _check(arch, 8, 48, 3, 10, seed=12, normalize_activations=True, b_dec_init="mean")


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu", "relu"])
def test_encode_decode_match_reference(arch):
    cfg = SAEConfig(architecture=arch, d_in=8, d_sae=40, k=6 if "topk" in arch else None, normalize_activations=True)
    sae = _random_sae(cfg, 5)
    x = jax.random.normal(jax.random.key(9), (2, 3, 8)) * 3 + 1  # leading dims are kept
    z = sae.encode(x)
    assert z.shape == (2, 3, 40)
    flat = x.reshape(-1, 8)
    _, ref = reference.LOSSES[arch](_params(sae), flat, cfg)
    z_ref = ref["z"]
    if arch == "batchtopk":  # inference: the learned threshold instead of the batch selection
        pre = (flat * sae.act_scale - sae.b_dec) @ sae.W_enc + sae.b_enc
        z_ref = jnp.where(pre > sae.threshold, jnp.maximum(pre, 0), 0)
    np.testing.assert_allclose(z.reshape(-1, 40), z_ref, rtol=1e-5, atol=1e-5)
    x_hat_ref = (z_ref @ sae.W_dec + sae.b_dec) / sae.act_scale
    np.testing.assert_allclose(sae.decode(z).reshape(-1, 8), x_hat_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sae(x).reshape(-1, 8), x_hat_ref, rtol=1e-5, atol=1e-5)


def test_topk_sparse_encode_matches_dense_encode():
    cfg = SAEConfig(architecture="topk", d_in=8, d_sae=50, k=5)
    sae = _random_sae(cfg, 2)
    x = jax.random.normal(jax.random.key(4), (7, 8))
    acts, idx = sae.encode_topk(x)
    dense = sae.encode(x)
    rows = jnp.arange(7)[:, None]
    np.testing.assert_allclose(dense[rows, idx], acts)
    assert int(jnp.sum(dense > 0)) == int(jnp.sum(acts > 0))
    assert bool(jnp.all(acts[:, :-1] >= acts[:, 1:]))  # sorted
