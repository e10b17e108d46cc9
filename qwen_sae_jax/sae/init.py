"""Initialisation: `init_sae(cfg, key, x_sample=None)`.

* ``W_dec`` rows: random directions (uniform draw, then normalised) of norm
  ``cfg.resolved_decoder_init_norm``; ``W_enc`` columns: the same directions with norm
  ``cfg.resolved_encoder_init_norm`` (``W_enc = W_dec^T`` up to scale; trained apart).
* ``b_enc = 0``; ``threshold``: ``jumprelu_init_threshold`` for jumprelu, 0 otherwise.
* ``act_scale``: with ``normalize_activations`` (resolved), ``cfg.normalized_input_norm`` / mean ||x|| over
  ``x_sample``, so the normalised inputs have mean norm sqrt(d_in) (jumprelu: 1); 1.0 otherwise, and when no
  sample is given.
* ``b_dec``: from the normalised ``x_sample``: its geometric median shrunk toward 0 unless it stands out
  from the spread (`shrunk_median`, the default), the plain geometric median (Weiszfeld), the mean, or zeros
  (``cfg.b_dec_init``; zeros as well when no sample is given).
Non-finite rows of ``x_sample`` are dropped.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.sae.config import SAEConfig
from qwen_sae_jax.sae.core import SAE


def geometric_median(points: jax.Array, *, max_iter: int = 100, tol: float = 1e-6, eps: float = 1e-8) -> jax.Array:
    """Geometric median of points [N, D] (argmin_y sum_i ||x_i - y||) by Weiszfeld's iteration
    y <- sum_i w_i x_i / sum_i w_i with w_i = 1 / max(||x_i - y||, eps), started at the mean and stopped
    when the step is below ``tol`` times the points' scale or after ``max_iter`` steps."""
    points = jnp.asarray(points, jnp.float32)
    scale = jnp.maximum(jnp.mean(jnp.linalg.norm(points - jnp.mean(points, 0), axis=-1)), eps)

    def step(state):
        y, _, it = state
        w = 1.0 / jnp.maximum(jnp.linalg.norm(points - y, axis=-1), eps)  # [N]
        new_y = jnp.sum(w[:, None] * points, axis=0) / jnp.sum(w)
        return new_y, jnp.linalg.norm(new_y - y), it + 1

    def keep_going(state):
        _, moved, it = state
        return (moved > tol * scale) & (it < max_iter)

    y0 = jnp.mean(points, axis=0)
    y, _, _ = lax.while_loop(keep_going, step, (y0, jnp.asarray(jnp.inf, jnp.float32), 0))
    return y


def _act_scale(x: jax.Array, target_norm: float | None = None) -> jax.Array:
    """target_norm / mean_i ||x_i|| for finite x [N, d_in] (traceable; 1.0 for a zero-norm sample).
    target_norm None = sqrt(d_in)."""
    target = jnp.sqrt(jnp.float32(x.shape[-1])) if target_norm is None else jnp.float32(target_norm)
    mean_norm = jnp.mean(jnp.linalg.norm(x, axis=-1))
    return jnp.where(mean_norm > 0, target / jnp.maximum(mean_norm, 1e-30), 1.0)


def estimate_act_scale(x: jax.Array, target_norm: float | None = None) -> jax.Array:
    """target_norm / mean_i ||x_i||: the factor that gives inputs [N, d_in] mean norm ``target_norm``
    (None = sqrt(d_in); an SAE's own is ``cfg.normalized_input_norm``)."""
    x = jnp.asarray(x, jnp.float32)
    if not bool(jnp.mean(jnp.linalg.norm(x, axis=-1)) > 0):
        raise UserError("cannot estimate act_scale: the activation sample has zero mean norm")
    return _act_scale(x, target_norm)


def shrunk_median(points: jax.Array) -> jax.Array:
    """The geometric median m of points [N, D], shrunk toward 0 by ``max(0, 1 - E||x - m||^2 / ||m||^2)``.

    A centre much larger than the spread around it (a constant offset, the massive dimensions of real residual
    streams) is kept almost whole, so the encoder does not start swamped by it; a centre inside the cloud is
    dropped, so latents start as directions from the origin (features add up from 0, and subtracting a
    centre inside the cloud makes every latent encode its feature relative to the average token)."""
    m = geometric_median(points)  # [D]
    spread = jnp.mean(jnp.sum(jnp.square(points - m), axis=-1))
    return m * jnp.maximum(0.0, 1.0 - spread / jnp.maximum(jnp.sum(m * m), 1e-30))


def init_sae(cfg: SAEConfig, key: jax.Array, x_sample: jax.Array | None = None) -> SAE:
    """A fresh SAE for ``cfg``; ``x_sample`` [N, d_in] (raw activations) sets b_dec and act_scale.
    Checks its inputs (eagerly); `init_sae_from_sample` is the traceable core."""
    if not isinstance(cfg, SAEConfig):
        raise UserError(f"init_sae expects an SAEConfig, got {type(cfg).__name__}")
    sample = _clean_sample(cfg, x_sample)
    if cfg.normalize_activations and sample is None:   # asked for explicitly; the default without a sample: 1
        raise UserError("normalize_activations=True needs x_sample (raw activations [N, d_in]) in init_sae")
    if cfg.resolved_normalize_activations and sample is not None:
        estimate_act_scale(sample)  # refuses a zero-norm sample
    return init_sae_from_sample(cfg, key, sample)


def init_sae_from_sample(cfg: SAEConfig, key: jax.Array, sample: jax.Array | None) -> SAE:
    """`init_sae` without the input checks, so it traces under jit/vmap (the trainer initialises every SAE of
    a group in one compiled call). ``sample`` [N, d_in] must hold finite rows, or be None (then act_scale 1
    and b_dec 0; with ``normalize_activations`` act_scale is 1 as well)."""
    dtype = jnp.dtype(cfg.dtype)
    if sample is not None:
        sample = jnp.asarray(sample, jnp.float32)
    if cfg.resolved_normalize_activations and sample is not None:
        act_scale = _act_scale(sample, cfg.normalized_input_norm)
    else:
        act_scale = jnp.ones((), jnp.float32)

    bound = 1.0 / np.sqrt(cfg.d_in)
    W_dec = jax.random.uniform(key, (cfg.d_sae, cfg.d_in), jnp.float32, -bound, bound)
    directions = W_dec / jnp.maximum(jnp.linalg.norm(W_dec, axis=-1, keepdims=True), 1e-12)  # [d_sae, d_in]
    W_dec = directions * cfg.resolved_decoder_init_norm
    W_enc = directions.T * cfg.resolved_encoder_init_norm  # [d_in, d_sae]

    if sample is None or cfg.b_dec_init == "zeros":
        b_dec = jnp.zeros((cfg.d_in,), jnp.float32)
    elif cfg.b_dec_init == "mean":
        b_dec = jnp.mean(sample * act_scale, axis=0)
    elif cfg.b_dec_init == "geometric_median":
        b_dec = geometric_median(sample * act_scale)
    else:
        b_dec = shrunk_median(sample * act_scale)

    threshold_value = cfg.jumprelu_init_threshold if cfg.architecture == "jumprelu" else 0.0
    return SAE(
        W_enc=W_enc.astype(dtype),
        b_enc=jnp.zeros((cfg.d_sae,), dtype),
        W_dec=W_dec.astype(dtype),
        b_dec=b_dec.astype(dtype),
        threshold=jnp.full((cfg.d_sae,), threshold_value, dtype),
        act_scale=act_scale.astype(jnp.float32),
        cfg=cfg,
    )


def _clean_sample(cfg: SAEConfig, x_sample: jax.Array | None) -> jax.Array | None:
    if x_sample is None:
        return None
    x = jnp.asarray(x_sample, jnp.float32)
    if x.ndim != 2 or x.shape[1] != cfg.d_in:
        raise UserError(f"x_sample must have shape [N, d_in={cfg.d_in}]; got {tuple(x.shape)}")
    x = x[jnp.all(jnp.isfinite(x), axis=-1)]
    if x.shape[0] == 0:
        raise UserError("x_sample has no finite rows")
    return x
