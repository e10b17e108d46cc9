"""TopK SAE (Gao et al. 2024): ``z = TopK_k(ReLU(x_enc @ W_enc + b_enc))``, ``x_hat = z @ W_dec + b_dec``,
loss = mse + aux_coefficient * AuxK.

Sparse throughout: the selection yields ``(acts, idx)`` [B, k]; the decoder is a gather
(`sparse_decode`) and the encoder backward a scatter (`sparse_encoder_acts`); no dense [B, d_sae]
latent matrix is built (only `encode`, whose contract is dense latents, scatters into one).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from qwen_sae_jax.sae.architectures.auxk import MainContext, with_auxk
from qwen_sae_jax.sae.architectures.common import encoder_input
from qwen_sae_jax.sae.loss_terms import LossTerms, min_nonzero, reconstruction_terms
from qwen_sae_jax.sae.registry import Architecture, register
from qwen_sae_jax.sae.select import select_topk
from qwen_sae_jax.sae.sparse import sparse_decode, sparse_encoder_acts

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE


def encode_sparse(sae: "SAE", x_in: jax.Array, implementation: str = "auto") -> tuple[jax.Array, jax.Array]:
    """(acts [B, k], idx [B, k] int32), differentiable w.r.t. the SAE parameters and x_in (sparsely)."""
    assert sae.cfg.k is not None  # SAEConfig requires k for topk
    x_enc = encoder_input(sae, x_in)
    acts, idx, _ = select_topk(x_enc, sae.W_enc, sae.b_enc, sae.cfg.k, implementation)
    acts = sparse_encoder_acts(acts, idx, x_in.astype(sae.W_enc.dtype), sae.W_enc, sae.b_enc, sae.b_dec,
                               sae.cfg.apply_b_dec_to_input)
    return acts, idx


def encode(sae: "SAE", x_in: jax.Array, implementation: str = "auto") -> jax.Array:
    """Dense latents [B, d_sae] of the k largest ReLU'd pre-activations per token (scattered from `encode_sparse`)."""
    acts, idx = encode_sparse(sae, x_in, implementation)
    rows = jnp.arange(idx.shape[0])[:, None]
    return jnp.zeros((idx.shape[0], sae.cfg.d_sae), acts.dtype).at[rows, idx].set(acts)


def loss(sae: "SAE", x_in, valid, dead_mask, implementation: str = "auto") -> tuple[jax.Array, LossTerms]:
    """mse + AuxK of the sparse TopK reconstruction (sparse gather decode and sparse gradients)."""
    return with_auxk(main_loss, sae, x_in.astype(sae.W_enc.dtype), valid, dead_mask, implementation)


def main_loss(sae: "SAE", x_in, valid, implementation: str) -> tuple[tuple[jax.Array, LossTerms], MainContext]:
    """((mse, terms with aux = 0), what AuxK reuses: (x_enc, x_hat, pre))."""
    cfg = sae.cfg
    assert cfg.k is not None  # SAEConfig requires k for topk
    x_enc = encoder_input(sae, x_in)  # [B, d_in]
    acts_nograd, idx, pre = select_topk(x_enc, sae.W_enc, sae.b_enc, cfg.k, implementation)  # [B, k]
    acts_nograd = jnp.where(valid[:, None], acts_nograd, 0)
    acts = sparse_encoder_acts(acts_nograd, idx, x_in, sae.W_enc, sae.b_enc, sae.b_dec, cfg.apply_b_dec_to_input)
    x_hat = sparse_decode(acts, idx, sae.W_dec) + sae.b_dec  # [B, d_in]
    mse, fvu = reconstruction_terms(x_in, x_hat, valid)
    active = acts_nograd > 0  # [B, k]
    fired = jnp.zeros((cfg.d_sae,), bool).at[idx.reshape(-1)].max(active.reshape(-1))
    l0 = jnp.sum(active.astype(jnp.float32)) / jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)
    zero = jnp.zeros((), jnp.float32)
    terms = LossTerms(mse=mse, fvu=fvu, aux=zero, sparsity=zero, l0=l0, fired=fired,
                      min_active=min_nonzero(acts_nograd), n_nonfinite=jnp.zeros((), jnp.int32))
    return (mse, terms), (x_enc, x_hat, pre)


register(Architecture("topk", encode=encode, loss=loss, encode_sparse=encode_sparse))
