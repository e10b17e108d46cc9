"""Activation-level and model-level SAE metrics as pure functions plus streaming accumulators.

Activation level (``ActivationStats``), over the held-out tokens that pass the token mask:

* ``mse``: squared error summed over ``d_in``, averaged over tokens, ``E_t ||x_t - x_hat_t||^2`` (SAELens'
  ``reconstruction_quality/mse``); ``mse_per_dim = mse / d_in``.
* ``explained_variance``: exactly SAELens' ``ExplainedVarianceCalculator`` (``sae_lens/evals.py``, v6):
  ``1 - E_t ||x_t - x_hat_t||^2 / (E_t ||x_t||^2 - ||E_t x_t||^2)``, i.e. one minus the dataset MSE over the
  total variance of ``x`` summed over dimensions, sums accumulated in float64; when the total variance is
  below 1e-10 it is 1 if the MSE is too, else 0. (Not SAELens' per-token ``explained_variance_legacy``.)
* ``fvu`` (fraction of variance unexplained, normalised MSE) ``= 1 - explained_variance`` (the same ratio
  sparsify calls FVU).
* ``cossim``: mean over tokens of ``x . x_hat / (|x| |x_hat|)`` (SAELens' ``cossim``; a zero vector counts
  as cosine 0 instead of NaN).
* ``l0``: number of non-zero latents per token: mean, std, percentiles, and the full distribution.
* ``dead_fraction``: latents that never fired on the evaluated tokens; ``dense_fraction``: latents firing
  on more than ``dense_threshold`` of them; ``log10_density`` [d_sae]: ``log10(fire_count / n_tokens +
  1e-10)`` (SAELens' ``sparsity.safetensors`` convention).

Model level (next-token cross-entropy and KL, summed over valid positions and averaged at the end):
``ce_loss_recovered = (CE_ablated - CE_spliced) / (CE_ablated - CE_clean)`` (SAELens' ``ce_loss_score``),
``delta_lm_loss = CE_spliced - CE_clean``, ``kl = KL(clean || spliced)`` per position.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.cross_entropy import token_nll

LOG_DENSITY_EPS = 1e-10


# ----------------------------------------------------------------------------------------------------
# activation level
# ----------------------------------------------------------------------------------------------------
def activation_batch_sums(x: jax.Array, x_hat: jax.Array, z: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """Per-batch sums over the masked tokens (traceable; call it inside jit).

    x, x_hat [N, d_in]; z [N, d_sae] dense latents; mask [N] bool (tokens to count).
    """
    x = x.astype(jnp.float32)
    x_hat = x_hat.astype(jnp.float32)
    w = mask.astype(jnp.float32)                                   # [N]
    resid = jnp.sum((x - x_hat) ** 2, axis=-1)                     # [N]
    sq_norm = jnp.sum(x * x, axis=-1)                              # [N]
    denom = jnp.sqrt(sq_norm) * jnp.linalg.norm(x_hat, axis=-1)
    cos = jnp.where(denom > 0, jnp.sum(x * x_hat, axis=-1) / jnp.where(denom > 0, denom, 1.0), 0.0)
    fired = (z != 0) & mask[:, None]                               # [N, d_sae]
    l0 = jnp.sum(fired, axis=-1)                                   # [N]
    d_sae = z.shape[-1]
    l0_hist = jnp.zeros((d_sae + 1,), jnp.int32).at[l0].add(mask.astype(jnp.int32))
    return {
        "n": jnp.sum(mask.astype(jnp.int32)),
        "sum_x": jnp.sum(x * w[:, None], axis=0),
        "sum_sq_norm": jnp.sum(sq_norm * w),
        "sum_sq_resid": jnp.sum(resid * w),
        "sum_cos": jnp.sum(cos * w),
        "fire_counts": jnp.sum(fired, axis=0, dtype=jnp.int32),
        "l0_hist": l0_hist,
    }


@dataclass
class ActivationStats:
    """Streaming accumulator of `activation_batch_sums` (float64 / int64 on the host)."""

    d_in: int
    d_sae: int
    n_tokens: int = 0
    sum_x: np.ndarray = field(default=None)  # type: ignore[arg-type]  # None = zeros, set in __post_init__
    sum_sq_norm: float = 0.0
    sum_sq_resid: float = 0.0
    sum_cos: float = 0.0
    fire_counts: np.ndarray = field(default=None)  # type: ignore[arg-type]  # likewise
    l0_hist: np.ndarray = field(default=None)  # type: ignore[arg-type]  # likewise

    def __post_init__(self):
        if self.sum_x is None:
            self.sum_x = np.zeros(self.d_in, np.float64)
        if self.fire_counts is None:
            self.fire_counts = np.zeros(self.d_sae, np.int64)
        if self.l0_hist is None:
            self.l0_hist = np.zeros(self.d_sae + 1, np.int64)

    def add(self, sums: dict) -> None:
        sums = jax.device_get(sums)
        self.n_tokens += int(sums["n"])
        self.sum_x += np.asarray(sums["sum_x"], np.float64)
        self.sum_sq_norm += float(sums["sum_sq_norm"])
        self.sum_sq_resid += float(sums["sum_sq_resid"])
        self.sum_cos += float(sums["sum_cos"])
        self.fire_counts += np.asarray(sums["fire_counts"], np.int64)
        self.l0_hist += np.asarray(sums["l0_hist"], np.int64)

    # --- results ---------------------------------------------------------------------------------------
    @property
    def mse(self) -> float:
        return self.sum_sq_resid / self.n_tokens

    @property
    def total_variance(self) -> float:
        mean_x = self.sum_x / self.n_tokens
        return self.sum_sq_norm / self.n_tokens - float(mean_x @ mean_x)

    @property
    def explained_variance(self) -> float:
        total, mse = self.total_variance, self.mse
        if total < 1e-10:
            return 1.0 if mse < 1e-10 else 0.0
        return 1.0 - mse / total

    @property
    def density(self) -> np.ndarray:
        """[d_sae] fraction of evaluated tokens on which each latent fired."""
        return self.fire_counts / max(self.n_tokens, 1)

    @property
    def log10_density(self) -> np.ndarray:
        return np.log10(self.density + LOG_DENSITY_EPS)

    def l0_percentile(self, q: float) -> float:
        """The smallest L0 value with at least ``q`` percent of tokens at or below it."""
        cum = np.cumsum(self.l0_hist)
        return float(np.searchsorted(cum, q / 100.0 * cum[-1], side="left"))

    def summary(self, dense_threshold: float = 0.1) -> dict[str, float]:
        if self.n_tokens == 0:
            raise ValueError("no tokens were evaluated (all positions masked?)")
        values = np.arange(self.d_sae + 1)
        l0_mean = float(values @ self.l0_hist) / self.n_tokens
        l0_var = float((values - l0_mean) ** 2 @ self.l0_hist) / self.n_tokens
        ev = self.explained_variance
        return {
            "n_tokens": self.n_tokens,
            "mse": self.mse,
            "mse_per_dim": self.mse / self.d_in,
            "explained_variance": ev,
            "fvu": 1.0 - ev,
            "cossim": self.sum_cos / self.n_tokens,
            "l0_mean": l0_mean,
            "l0_std": float(np.sqrt(l0_var)),
            "l0_p10": self.l0_percentile(10),
            "l0_p50": self.l0_percentile(50),
            "l0_p90": self.l0_percentile(90),
            "dead_fraction": float(np.mean(self.fire_counts == 0)),
            "dense_fraction": float(np.mean(self.density > dense_threshold)),
        }


# ----------------------------------------------------------------------------------------------------
# model level
# ----------------------------------------------------------------------------------------------------
def next_token_ce(logits: jax.Array, input_ids: jax.Array) -> jax.Array:
    """Per-position next-token cross-entropy: logits [B, T, V], input_ids [B, T] -> [B, T-1] (float32);
    entry t is the loss of predicting token t+1 from the prefix up to t."""
    return token_nll(logits[:, :-1], input_ids[:, 1:])


def kl_divergence(clean_logits: jax.Array, new_logits: jax.Array) -> jax.Array:
    """Per-position ``KL(softmax(clean) || softmax(new))`` [..., V] -> [...] (float32), as SAELens' _kl."""
    return kl_from_log_probs(jax.nn.log_softmax(clean_logits.astype(jnp.float32), axis=-1), new_logits)


def kl_from_log_probs(clean_log_probs: jax.Array, new_logits: jax.Array) -> jax.Array:
    """`kl_divergence` with the clean side already as log-probabilities (computed once, reused)."""
    logq = jax.nn.log_softmax(new_logits.astype(jnp.float32), axis=-1)
    return jnp.sum(jnp.exp(clean_log_probs) * (clean_log_probs - logq), axis=-1)


def ce_loss_recovered(ce_clean: float, ce_spliced: float, ce_ablated: float) -> float:
    """``(CE_ablated - CE_spliced) / (CE_ablated - CE_clean)``: 1 for a perfect SAE, 0 for one no better
    than ablating the site; NaN when ablation does not change the loss."""
    gap = ce_ablated - ce_clean
    return float((ce_ablated - ce_spliced) / gap) if gap != 0 else float("nan")


@dataclass
class MeanAccumulator:
    """Token-weighted running mean of per-position values (host float64)."""

    total: float = 0.0
    count: int = 0

    def add(self, value_sum, count) -> None:
        self.total += float(value_sum)
        self.count += int(count)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")
