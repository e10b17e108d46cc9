"""BatchTopK SAE (Bussmann et al. 2024): in training keep the top ``k * B`` ReLU'd pre-activations of the
whole batch (so k is the average per token); at inference a learned global threshold replaces the
batch selection, ``z = relu(pre) * (pre > threshold)`` (JumpReLU-like, as SAELens saves it).

The threshold is not trained by gradient: after each optimizer step the trainer calls
`qwen_sae_jax.sae.training.update_batchtopk_threshold` (or `after_update`), an EMA toward the smallest
selected activation of the batch (``LossTerms.min_active``). ``threshold`` holds that one value for
every latent. Loss = mse + aux_coefficient * AuxK (dead latents). The batch selection is dense.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from qwen_sae_jax.sae.architectures.auxk import MainContext, with_auxk
from qwen_sae_jax.sae.architectures.common import decode_dense, encoder_input, fired_and_l0, pre_activations
from qwen_sae_jax.sae.loss_terms import LossTerms, min_nonzero, reconstruction_terms
from qwen_sae_jax.sae.registry import Architecture, register
from qwen_sae_jax.sae.select import encoder_matmul

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE


def encode(sae: "SAE", x_in: jax.Array, implementation: str = "auto") -> jax.Array:
    """Inference encoding with the learned threshold."""
    del implementation
    pre = pre_activations(sae, x_in)
    return jnp.where(pre > sae.threshold, jnp.maximum(pre, 0), 0)


def batch_topk_mask(relu_pre: jax.Array, k: int) -> jax.Array:
    """[B, N] -> [B, N] float mask of the k * B largest entries of the whole batch (no gradient)."""
    batch, width = relu_pre.shape
    _, flat_idx = lax.top_k(lax.stop_gradient(relu_pre).reshape(-1), k * batch)
    return jnp.zeros((batch * width,), relu_pre.dtype).at[flat_idx].set(1).reshape(batch, width)


def loss(sae: "SAE", x_in, valid, dead_mask, implementation: str = "auto") -> tuple[jax.Array, LossTerms]:
    """mse + AuxK of the reconstruction from the batch's top ``k * B`` ReLU'd pre-activations."""
    return with_auxk(main_loss, sae, x_in.astype(sae.W_enc.dtype), valid, dead_mask, implementation)


def main_loss(sae: "SAE", x_in, valid, implementation: str) -> tuple[tuple[jax.Array, LossTerms], MainContext]:
    """((mse, terms with aux = 0), what AuxK reuses: (x_enc, x_hat, pre without bias))."""
    del implementation  # the batch selection is dense
    assert sae.cfg.k is not None  # SAEConfig requires k for batchtopk
    x_enc = encoder_input(sae, x_in)  # [B, d_in]
    pre_no_bias = encoder_matmul(x_enc, sae.W_enc)  # [B, d_sae], reused by AuxK
    pre = pre_no_bias + sae.b_enc  # [B, d_sae]
    relu_pre = jnp.where(valid[:, None], jnp.maximum(pre, 0), 0)
    z = relu_pre * batch_topk_mask(relu_pre, sae.cfg.k)  # [B, d_sae]
    x_hat = decode_dense(sae, z)
    mse, fvu = reconstruction_terms(x_in, x_hat, valid)
    fired, l0 = fired_and_l0(z, valid)
    zero = jnp.zeros((), jnp.float32)
    terms = LossTerms(mse=mse, fvu=fvu, aux=zero, sparsity=zero, l0=l0, fired=fired,
                      min_active=min_nonzero(lax.stop_gradient(z)), n_nonfinite=jnp.zeros((), jnp.int32))
    return (mse, terms), (x_enc, x_hat, pre_no_bias)


register(Architecture("batchtopk", encode=encode, loss=loss))
