"""AuxK (Gao et al. 2024), shared by topk and batchtopk: reconstruct the main model's residual
``x - x_hat`` from each token's top-k_aux *dead* latents (bias-free decode), weighted by
min(num_dead / k_aux, 1) and ``aux_coefficient``.

The selection reuses the dense matrix ``x_enc @ W_enc`` when the XLA path built it (with the bias of
live latents set to -inf); on the Pallas path it runs the fused kernel again with the bias of live latents
set to -inf, so no [B, d_sae] matrix is written. Gradients are sparse (`sparse_encoder_acts`, `sparse_decode`).

Nearly free when no latent is dead (`with_auxk`): the architecture's loss and the AuxK term form one
`jax.custom_vjp` whose forward runs the AuxK selection and decode under a `lax.cond` with only small
outputs ([B, k_aux], [B, d_in], no parameter-sized residual), and whose backward adds the AuxK gradients to
the main loss's gradients under a `lax.cond` that passes them through unchanged when nothing is dead.
(Differentiating a plain `lax.cond` instead costs a copy of W_enc and W_dec as residuals, zero-filled
[d_in, d_sae] / [d_sae, d_in] cotangents and their addition to the main gradients on every step, dead latents
or not: about 10% of a TopK step at d_sae 16384, see docs/sae.md. A 0-or-1-trip `lax.while_loop` in place of
the backward cond does not work: XLA hoists the loop-invariant AuxK backward out of the loop.)
Values and gradients are those of ``main + aux`` differentiated as one function (test_auxk.py).
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

import jax
import jax.numpy as jnp
from jax import lax

from qwen_sae_jax.sae.loss_terms import LossTerms, auxk_loss
from qwen_sae_jax.sae.select import select_topk, top_k_of
from qwen_sae_jax.sae.sparse import sparse_decode, sparse_encoder_acts

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE

# what an architecture's main loss returns beside (loss, terms): (x_enc [B, d_in], x_hat [B, d_in],
# pre [B, d_sae] = x_enc @ W_enc without bias, or None on the Pallas path)
MainContext = tuple[jax.Array, jax.Array, "jax.Array | None"]
MainLoss = Callable[["SAE", jax.Array, jax.Array, str], tuple[tuple[jax.Array, LossTerms], MainContext]]


def select_dead(sae: "SAE", x_enc: jax.Array, valid: jax.Array, dead_mask: jax.Array, pre: jax.Array | None,
                implementation: str) -> tuple[jax.Array, jax.Array]:
    """(acts [B, k_aux], idx [B, k_aux]): each valid token's k_aux largest ReLU'd pre-activations among the
    dead latents (0 where the selected latent is live or the row invalid). No gradient."""
    k_aux = sae.cfg.resolved_k_aux
    b_masked = jnp.where(dead_mask, sae.b_enc, -jnp.inf)  # [d_sae]: live latents excluded
    if pre is not None:  # x_enc @ W_enc without the bias, from the main selection
        vals, idx = top_k_of(lax.stop_gradient(pre), lax.stop_gradient(b_masked).astype(pre.dtype), k_aux,
                             implementation)
        vals = jnp.maximum(vals, 0)
    else:
        vals, idx, _ = select_topk(x_enc, sae.W_enc, b_masked, k_aux, implementation)
    keep = jnp.take(dead_mask, idx) & valid[:, None]  # [B, k_aux]
    return jnp.where(keep, vals, 0).astype(sae.W_enc.dtype), idx


def dead_decode(sae: "SAE", x_in: jax.Array, acts: jax.Array, idx: jax.Array) -> jax.Array:
    """The bias-free decode [B, d_in] of the selected dead latents, differentiable w.r.t. the SAE and x_in."""
    acts = sparse_encoder_acts(acts, idx, x_in, sae.W_enc, sae.b_enc, sae.b_dec, sae.cfg.apply_b_dec_to_input)
    return sparse_decode(acts, idx, sae.W_dec)


def weighted_auxk(sae: "SAE", e_hat: jax.Array, residual: jax.Array, valid: jax.Array,
                  dead_mask: jax.Array) -> jax.Array:
    """``aux_coefficient * auxk_loss`` of the dead decode ``e_hat`` against ``residual`` = x_in - x_hat."""
    return sae.cfg.aux_coefficient * auxk_loss(e_hat, residual, valid, dead_mask, sae.cfg.resolved_k_aux)


def with_auxk(main: MainLoss, sae: "SAE", x_in: jax.Array, valid: jax.Array, dead_mask: jax.Array | None,
              implementation: str) -> tuple[jax.Array, LossTerms]:
    """``main``'s (loss, terms) plus the weighted AuxK term (added to the loss, reported in ``terms.aux``); just
    ``main`` when ``dead_mask`` is None or ``aux_coefficient`` is 0. ``main(sae, x_in, valid, implementation)``
    returns ``((loss, terms), (x_enc, x_hat, pre))``."""
    if dead_mask is None or sae.cfg.aux_coefficient == 0:
        return main(sae, x_in, valid, implementation)[0]
    return _main_and_auxk(main, implementation, sae, x_in, valid, dead_mask)


def _aux_forward(sae, x_in, valid, dead_mask, ctx, implementation):
    """(aux [], acts [B, k_aux], idx [B, k_aux], e_hat [B, d_in], residual [B, d_in]); the selection and decode
    only run when a latent is dead (zeros otherwise)."""
    x_enc, x_hat, pre = ctx
    residual = lax.stop_gradient(x_in - x_hat)  # [B, d_in]
    k_aux = sae.cfg.resolved_k_aux

    def compute(_):
        acts, idx = select_dead(sae, x_enc, valid, dead_mask, pre, implementation)
        e_hat = dead_decode(sae, x_in, acts, idx)
        return weighted_auxk(sae, e_hat, residual, valid, dead_mask), acts, idx, e_hat

    def nothing_dead(_):
        return (jnp.zeros((), jnp.float32), jnp.zeros((x_in.shape[0], k_aux), sae.W_enc.dtype),
                jnp.zeros((x_in.shape[0], k_aux), jnp.int32), jnp.zeros(x_in.shape, sae.W_dec.dtype))

    aux, acts, idx, e_hat = lax.cond(jnp.any(dead_mask), compute, nothing_dead, None)
    return aux, acts, idx, e_hat, residual


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _main_and_auxk(main, implementation, sae, x_in, valid, dead_mask):
    (loss, terms), ctx = main(sae, x_in, valid, implementation)
    aux = _aux_forward(sae, x_in, valid, dead_mask, ctx, implementation)[0]
    return loss + aux, terms.replace(aux=aux)


def _main_and_auxk_fwd(main, implementation, sae, x_in, valid, dead_mask):
    (loss, terms), main_vjp, ctx = jax.vjp(lambda s, x: main(s, x, valid, implementation), sae, x_in,
                                           has_aux=True)
    aux, acts, idx, e_hat, residual = _aux_forward(sae, x_in, valid, dead_mask, ctx, implementation)
    residuals = (main_vjp, sae, x_in, valid, dead_mask, acts, idx, e_hat, residual)
    return (loss + aux, terms.replace(aux=aux)), residuals


def _main_and_auxk_bwd(main, implementation, residuals, cotangents):
    main_vjp, sae, x_in, valid, dead_mask, acts, idx, e_hat, residual = residuals
    g_loss, g_terms = cotangents
    g_aux = g_loss + g_terms.aux  # aux is in the loss and in terms.aux
    grads = main_vjp((g_loss, g_terms))  # (d_sae, d_x_in), as main alone would give them

    def add_auxk_grads(g):
        g_sae, g_x = g
        _, e_vjp = jax.vjp(lambda s, x: dead_decode(s, x, acts, idx), sae, x_in)
        (g_e,) = jax.vjp(lambda e: weighted_auxk(sae, e, residual, valid, dead_mask), e_hat)[1](g_aux)
        d_sae, d_x = e_vjp(g_e)
        return jax.tree.map(jnp.add, g_sae, d_sae), g_x + d_x

    g_sae, g_x = lax.cond(jnp.any(dead_mask), add_auxk_grads, lambda g: g, grads)
    return g_sae, g_x, None, None


_main_and_auxk.defvjp(_main_and_auxk_fwd, _main_and_auxk_bwd)
