"""AuxK's custom_vjp (`architectures.auxk.with_auxk`) against the plain formulation it replaced: the main loss plus
a differentiated ``lax.cond`` over the dead latents. With nothing dead, loss and gradients are bit-identical (to
that, and loss and parameter gradients to no AuxK at all); with dead latents the loss is identical and the
gradients agree to float32 rounding (the AuxK gradients are added to the main ones in another order)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from qwen_sae_jax.sae import SAEConfig, init_sae, sae_loss
from qwen_sae_jax.sae.architectures import batchtopk, topk
from qwen_sae_jax.sae.architectures.auxk import dead_decode, select_dead, weighted_auxk
from qwen_sae_jax.sae.loss_terms import finite_rows

MAIN = {"topk": topk.main_loss, "batchtopk": batchtopk.main_loss}


def _plain_cond_loss(sae, x, dead):
    """The formulation before the custom_vjp: AuxK under a lax.cond, differentiated by plain autodiff."""
    x_in, valid = finite_rows(x * lax.stop_gradient(sae.act_scale).astype(x.dtype))
    x_in = x_in.astype(sae.W_enc.dtype)
    (loss, terms), (x_enc, x_hat, pre) = MAIN[sae.cfg.architecture](sae, x_in, valid, "xla")

    def compute(_):
        acts, idx = select_dead(sae, x_enc, valid, dead, pre, "xla")
        return weighted_auxk(sae, dead_decode(sae, x_in, acts, idx), x_in - x_hat, valid, dead)

    aux = lax.cond(jnp.any(dead), compute, lambda _: jnp.zeros((), jnp.float32), None)
    return loss + aux, terms.replace(aux=aux)


def _grads(fn, sae, x, dead):
    """((loss, terms), (d_sae, d_x)) of ``fn(sae, x, dead)``, jitted."""
    return jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))(sae, x, dead)


def _setup(arch):
    cfg = SAEConfig(architecture=arch, d_in=16, d_sae=96, k=4, k_aux=10)
    x = jax.random.normal(jax.random.key(0), (12, 16)) * 2 + 1
    x = x.at[3].set(jnp.nan)  # a skipped row takes part too
    return init_sae(cfg, jax.random.key(1), x[4:]), x


def _new(sae, x, dead):
    return sae_loss(sae, x, dead_mask=dead, implementation="xla")


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_nothing_dead_is_bit_identical_to_the_plain_cond_and_to_no_auxk(arch):
    sae, x = _setup(arch)
    dead = jnp.zeros((sae.cfg.d_sae,), bool)
    (loss, terms), grads = _grads(_new, sae, x, dead)
    (ref_loss, ref_terms), ref_grads = _grads(_plain_cond_loss, sae, x, dead)
    (off_loss, _), off_grads = _grads(lambda s, xx, d: sae_loss(s, xx, implementation="xla"), sae, x, dead)
    assert float(terms.aux) == 0.0
    np.testing.assert_array_equal(loss, ref_loss)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_array_equal(got, want)
    # without AuxK: the same loss and parameter gradients (d_x is summed in another order, as it was before)
    np.testing.assert_array_equal(loss, off_loss)
    for got, want in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(off_grads[0]), strict=True):
        np.testing.assert_array_equal(got, want)
    for name in ("mse", "fvu", "l0", "fired", "min_active"):
        np.testing.assert_array_equal(getattr(terms, name), getattr(ref_terms, name))


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_dead_latents_give_the_plain_cond_loss_and_gradients(arch):
    sae, x = _setup(arch)
    dead = jnp.arange(sae.cfg.d_sae) % 3 == 0
    (loss, terms), grads = _grads(_new, sae, x, dead)
    (ref_loss, ref_terms), ref_grads = _grads(_plain_cond_loss, sae, x, dead)
    assert float(terms.aux) > 0
    np.testing.assert_array_equal(loss, ref_loss)
    np.testing.assert_array_equal(terms.aux, ref_terms.aux)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    off_grads = _grads(lambda s, xx, d: sae_loss(s, xx, implementation="xla"), sae, x, dead)[1]
    assert not np.allclose(grads[0].W_enc, off_grads[0].W_enc)  # the AuxK gradients did arrive


def test_the_aux_term_in_terms_is_differentiated_too():
    """A loss built from ``terms.aux`` (as sparsify's ``fvu + auxk / 32``) gets the AuxK gradient."""
    sae, x = _setup("topk")
    dead = jnp.arange(sae.cfg.d_sae) % 3 == 0

    def from_terms(fn):
        return jax.grad(lambda s: (lambda out: out[1].fvu + out[1].aux / 32)(fn(s, x, dead)))(sae)

    for got, want in zip(jax.tree.leaves(from_terms(_new)), jax.tree.leaves(from_terms(_plain_cond_loss)), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
