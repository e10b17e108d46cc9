"""JumpReLU SAE (Rajamanoharan et al. 2024, Gemma Scope): ``z = relu(pre) * H(pre - threshold)`` with a
learned per-latent threshold, trained through kernel-density pseudo-derivatives (rectangle kernel
K(u) = 1{|u| < 1/2}, bandwidth eps = ``jumprelu_bandwidth``):

    d z / d threshold      = -(threshold / eps) * K((pre - threshold) / eps)
    d H(pre - thr) / d thr = -(1 / eps) * K((pre - threshold) / eps),   d H / d pre = 0

Loss = mse + l0_coefficient * mean_b sum_j H(pre_j - threshold_j)
           + pre_act_loss_coefficient * mean_b sum_j dead_j * relu(threshold_j - pre_j) * ||W_dec_j||
(the last one, Anthropic's pre-activation loss, only with a dead_mask; reported as ``aux``).
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from qwen_sae_jax.sae.architectures.common import decode_dense, decoder_row_norms, fired_and_l0, pre_activations
from qwen_sae_jax.sae.loss_terms import LossTerms, min_nonzero, reconstruction_terms
from qwen_sae_jax.sae.registry import Architecture, register

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE


def _rectangle(u: jax.Array) -> jax.Array:
    return ((u > -0.5) & (u < 0.5)).astype(u.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def jumprelu(pre: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
    """relu(pre) * H(pre - threshold); pre [..., d_sae], threshold [d_sae]."""
    return jnp.where(pre > threshold, jnp.maximum(pre, 0), 0).astype(pre.dtype)


def _jumprelu_fwd(pre, threshold, bandwidth):
    return jumprelu(pre, threshold, bandwidth), (pre, threshold)


def _jumprelu_bwd(bandwidth, residuals, g):
    pre, threshold = residuals
    d_pre = jnp.where((pre > threshold) & (pre > 0), g, 0)
    d_thr = -(threshold / bandwidth) * _rectangle((pre - threshold) / bandwidth) * g
    d_thr = jnp.sum(d_thr.reshape(-1, threshold.shape[-1]), axis=0)
    return d_pre.astype(pre.dtype), d_thr.astype(threshold.dtype)


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def step(pre: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
    """H(pre - threshold) with the pseudo-derivative w.r.t. threshold (none w.r.t. pre)."""
    return (pre > threshold).astype(pre.dtype)


def _step_fwd(pre, threshold, bandwidth):
    return step(pre, threshold, bandwidth), (pre, threshold)


def _step_bwd(bandwidth, residuals, g):
    pre, threshold = residuals
    d_thr = -(1.0 / bandwidth) * _rectangle((pre - threshold) / bandwidth) * g
    d_thr = jnp.sum(d_thr.reshape(-1, threshold.shape[-1]), axis=0)
    return jnp.zeros_like(pre), d_thr.astype(threshold.dtype)


step.defvjp(_step_fwd, _step_bwd)


def encode(sae: "SAE", x_in: jax.Array, implementation: str = "auto") -> jax.Array:
    """Dense latents ``relu(pre) * H(pre - threshold)`` [B, d_sae]."""
    del implementation
    return jumprelu(pre_activations(sae, x_in), sae.threshold, sae.cfg.jumprelu_bandwidth)


def loss(sae: "SAE", x_in, valid, dead_mask, implementation: str = "auto") -> tuple[jax.Array, LossTerms]:
    """mse + L0 (sparsity) + the pre-activation loss on dead latents (aux), see the module docstring."""
    del implementation
    cfg = sae.cfg
    x_in = x_in.astype(sae.W_enc.dtype)
    w = valid.astype(jnp.float32)
    n_valid = jnp.maximum(jnp.sum(w), 1.0)
    pre = pre_activations(sae, x_in)  # [B, d_sae]
    z = jumprelu(pre, sae.threshold, cfg.jumprelu_bandwidth) * valid[:, None].astype(pre.dtype)
    x_hat = decode_dense(sae, z)
    mse, fvu = reconstruction_terms(x_in, x_hat, valid)
    l0_ste = jnp.sum(w[:, None] * step(pre, sae.threshold, cfg.jumprelu_bandwidth).astype(jnp.float32)) / n_valid
    sparsity = cfg.l0_coefficient * l0_ste
    if dead_mask is not None and cfg.pre_act_loss_coefficient > 0:
        below = jnp.maximum(sae.threshold - pre, 0).astype(jnp.float32)  # [B, d_sae]
        per_token = jnp.sum(dead_mask[None, :] * below * decoder_row_norms(sae), axis=-1)
        aux = cfg.pre_act_loss_coefficient * jnp.sum(w * per_token) / n_valid
    else:
        aux = jnp.zeros((), jnp.float32)
    fired, l0 = fired_and_l0(z, valid)
    terms = LossTerms(mse=mse, fvu=fvu, aux=aux, sparsity=sparsity, l0=l0, fired=fired,
                      min_active=min_nonzero(lax.stop_gradient(z)), n_nonfinite=jnp.zeros((), jnp.int32))
    return mse + sparsity + aux, terms


register(Architecture("jumprelu", encode=encode, loss=loss))
