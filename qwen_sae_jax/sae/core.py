"""The `SAE` pytree: parameters in SAELens' names and layouts plus the static `SAEConfig`.

    W_enc     [d_in, d_sae]   encoder (x @ W_enc: the input side is the first axis)
    b_enc     [d_sae]
    W_dec     [d_sae, d_in]   decoder (row j is latent j's direction; z @ W_dec)
    b_dec     [d_in]
    threshold [d_sae]         JumpReLU thresholds; BatchTopK's inference threshold; zeros for topk/relu
    act_scale []              input normalisation: the SAE sees x * act_scale (1.0 when off)

``encode``/``decode``/``__call__`` take raw activations with any leading shape ``[..., d_in]``;
``decode`` returns raw units, i.e. ``(z @ W_dec + b_dec) / act_scale``. Bad shapes raise `UserError`;
so do NaN/inf inputs when called eagerly (under jit nothing can be raised: see `sae_loss` for the
training-time policy). ``implementation`` ("auto" | "pallas" | "xla" | "approx") picks the TopK kernel.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.sae.config import SAEConfig
from qwen_sae_jax.sae.registry import get_architecture
from qwen_sae_jax.sae.sparse import sparse_decode

PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "act_scale")


class SparseLatents(NamedTuple):
    """`SAE.encode_topk`'s sparse latents (unpacks as ``acts, idx``)."""

    acts: jax.Array  # [..., k] activations, sorted decreasing along the last axis
    idx: jax.Array  # [..., k] int32 latent ids


class SAE(flax.struct.PyTreeNode):
    W_enc: jax.Array  # [d_in, d_sae]
    b_enc: jax.Array  # [d_sae]
    W_dec: jax.Array  # [d_sae, d_in]
    b_dec: jax.Array  # [d_in]
    threshold: jax.Array  # [d_sae]
    act_scale: jax.Array  # []
    cfg: SAEConfig = flax.struct.field(pytree_node=False)

    # ------------------------------------------------------------------------------------------------
    def encode(self, x: jax.Array, *, implementation: str = "auto") -> jax.Array:
        """Dense latents [..., d_sae] of raw activations x [..., d_in]."""
        flat, lead = self._flatten_input(x, "encode")
        z = get_architecture(self.cfg.architecture).encode(self, self._normalise(flat), implementation)
        return z.reshape(lead + (self.cfg.d_sae,))

    def encode_topk(self, x: jax.Array, *, implementation: str = "auto") -> SparseLatents:
        """TopK only: the sparse form ``(acts [..., k], idx [..., k] int32)`` of `encode`, rows sorted by
        decreasing activation; differentiable w.r.t. the parameters without a dense [.., d_sae] matrix."""
        encode_sparse = get_architecture(self.cfg.architecture).encode_sparse
        if encode_sparse is None:
            raise UserError(f"encode_topk is for topk SAEs; this one is {self.cfg.architecture!r} (use encode)")
        flat, lead = self._flatten_input(x, "encode_topk")
        acts, idx = encode_sparse(self, self._normalise(flat), implementation)
        return SparseLatents(acts.reshape(lead + (self.cfg.k,)), idx.reshape(lead + (self.cfg.k,)))

    def decode(self, z: jax.Array) -> jax.Array:
        """Raw-unit reconstruction [..., d_in] of dense latents z [..., d_sae]."""
        z = jnp.asarray(z)
        if z.ndim < 1 or z.shape[-1] != self.cfg.d_sae:
            raise UserError(f"decode expects latents of shape [..., d_sae={self.cfg.d_sae}]; got {tuple(z.shape)}")
        out = jnp.dot(z.astype(self.W_dec.dtype), self.W_dec, preferred_element_type=jnp.float32)
        return self._denormalise(out + self.b_dec.astype(jnp.float32)).astype(self.W_dec.dtype)

    def decode_topk(self, acts: jax.Array, idx: jax.Array) -> jax.Array:
        """Raw-unit reconstruction [..., d_in] from the sparse form (acts, idx) [..., k] (a gather)."""
        if acts.shape != idx.shape or acts.ndim < 1:
            raise UserError(f"decode_topk expects acts and idx of the same shape [..., k]; "
                            f"got {acts.shape} and {idx.shape}")
        lead, k = acts.shape[:-1], acts.shape[-1]
        out = sparse_decode(acts.reshape(-1, k).astype(self.W_dec.dtype), idx.reshape(-1, k), self.W_dec)
        out = self._denormalise(out.astype(jnp.float32) + self.b_dec.astype(jnp.float32)).astype(self.W_dec.dtype)
        return out.reshape(lead + (self.cfg.d_in,))

    def __call__(self, x: jax.Array, *, implementation: str = "auto") -> jax.Array:
        """Reconstruction of raw activations x [..., d_in] (sparse gather decode for topk)."""
        if self.cfg.architecture == "topk":
            return self.decode_topk(*self.encode_topk(x, implementation=implementation))
        return self.decode(self.encode(x, implementation=implementation))

    # ------------------------------------------------------------------------------------------------
    def _normalise(self, x: jax.Array) -> jax.Array:
        return x * self.act_scale.astype(x.dtype)

    def _denormalise(self, x: jax.Array) -> jax.Array:
        return x / self.act_scale.astype(x.dtype)

    def _flatten_input(self, x: jax.Array, what: str) -> tuple[jax.Array, tuple[int, ...]]:
        self._check_finite(x, what)
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.cfg.d_in:
            raise UserError(
                f"{what}: activations of shape {tuple(x.shape)} do not match this SAE's d_in={self.cfg.d_in} "
                f"(hook {self.cfg.hook_name or '?'}); expected [..., {self.cfg.d_in}]"
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise UserError(f"{what}: activations must be floating point; got dtype {x.dtype}")
        return x.reshape(-1, self.cfg.d_in), x.shape[:-1]

    def _check_finite(self, x, what: str) -> None:
        """Raise for non-finite rows where that costs no device-to-host sync: host inputs (numpy, lists), or
        device arrays when ``jax_debug_nans`` is on. Otherwise NaN in gives NaN out for that row (as under jit)."""
        debug_nans = getattr(jax.config, "jax_debug_nans")       # a flag attribute jax's stubs lack
        if isinstance(x, jax.core.Tracer) or (isinstance(x, jax.Array) and not debug_nans):
            return
        rows = np.asarray(x)
        if not np.issubdtype(rows.dtype, np.floating) or rows.ndim < 1 or rows.shape[-1] != self.cfg.d_in:
            return   # the shape / dtype checks that follow say what is wrong
        bad = int(np.sum(~np.all(np.isfinite(rows.reshape(-1, self.cfg.d_in)), axis=-1)))
        if bad:
            raise UserError(f"{what}: {bad} activation row(s) contain NaN or inf; the SAE needs finite inputs")


def fold_act_scale(sae: SAE) -> SAE:
    """An equivalent SAE with ``act_scale == 1`` that takes raw activations (for export):
    W_enc * s, W_dec / s, b_dec / s; b_enc and threshold unchanged. Decoder rows lose unit norm."""
    s = sae.act_scale.astype(jnp.float32)
    cast = lambda a, ref: a.astype(ref.dtype)  # noqa: E731
    return sae.replace(
        W_enc=cast(sae.W_enc.astype(jnp.float32) * s, sae.W_enc),
        W_dec=cast(sae.W_dec.astype(jnp.float32) / s, sae.W_dec),
        b_dec=cast(sae.b_dec.astype(jnp.float32) / s, sae.b_dec),
        act_scale=jnp.ones_like(sae.act_scale),
    )
