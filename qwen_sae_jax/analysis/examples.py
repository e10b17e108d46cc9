"""Streaming per-feature statistics over a corpus, kept on device: top-N max-activating examples with their
context windows, firing counts, activation sums and activation histograms.

Nothing of size [tokens, d_sae] outlives one batch: each batch's dense latents ``z [B, T, F]`` are folded
into a fixed-size `FeatureState` by `update` (pure and jit-able) and dropped.

Conventions:
  * a feature *fires* at a position when ``z > 0`` there; only positions with ``valid`` set count (see
    `corpus.position_mask`);
  * top-N: per feature the ``n_examples`` largest activations over all valid positions (ties broken by
    ``lax.top_k``'s order); every example keeps the ``left + 1 + right`` tokens around its position
    (``tokens``, -1 outside the sequence or on padding) and the feature's activation at each of them
    (``acts``, 0 there) — the window is centred at index ``left``;
  * histogram: per feature, ``HIST_BINS`` equal bins over ``[0, 2**hist_exp)`` counting the positive
    activations, where ``2**hist_exp`` is the smallest power of two above the feature's maximum. When a
    batch raises the maximum, the old counts are merged into the coarser bins (powers of two nest), so the
    final histogram equals a histogram of all activations with the final range.
"""
from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

HIST_BINS = 32                 # a power of two (bins nest when the range doubles)
_LOG2_BINS = 5
_NO_EXP = -1000                # hist_exp of a feature that never fired


class FeatureState(flax.struct.PyTreeNode):
    values: jax.Array      # [F, N] float32 top activations, descending (-inf: empty slot)
    seq: jax.Array         # [F, N] int32 window (sequence) index of each example (-1: empty)
    pos: jax.Array         # [F, N] int32 position of the example in its sequence
    tokens: jax.Array      # [F, N, W] int32 context token ids (-1: outside the sequence / padding)
    acts: jax.Array        # [F, N, W] float32 the feature's activation at each context token
    fire_count: jax.Array  # [F] int32 valid positions where the feature fired
    act_sum: jax.Array     # [F] float32 sum of the feature's activations
    hist: jax.Array        # [F, HIST_BINS] int32
    hist_exp: jax.Array    # [F] int32 histogram range is [0, 2**hist_exp)
    n_tokens: jax.Array    # [] int32 valid positions seen
    left: int = flax.struct.field(pytree_node=False, default=8)
    right: int = flax.struct.field(pytree_node=False, default=4)


def init_state(d_sae: int, n_examples: int, left: int = 8, right: int = 4) -> FeatureState:
    if n_examples < 1 or left < 0 or right < 0:
        raise ValueError(f"n_examples >= 1, left >= 0, right >= 0 required; got {n_examples}, {left}, {right}")
    W = left + 1 + right
    return FeatureState(
        values=jnp.full((d_sae, n_examples), -jnp.inf, jnp.float32),
        seq=jnp.full((d_sae, n_examples), -1, jnp.int32), pos=jnp.zeros((d_sae, n_examples), jnp.int32),
        tokens=jnp.full((d_sae, n_examples, W), -1, jnp.int32),
        acts=jnp.zeros((d_sae, n_examples, W), jnp.float32),
        fire_count=jnp.zeros((d_sae,), jnp.int32), act_sum=jnp.zeros((d_sae,), jnp.float32),
        hist=jnp.zeros((d_sae, HIST_BINS), jnp.int32), hist_exp=jnp.full((d_sae,), _NO_EXP, jnp.int32),
        n_tokens=jnp.zeros((), jnp.int32), left=left, right=right)


def _top_candidates(state: FeatureState, z, ids, valid, real, seq_start):
    """This batch's own top-N per feature with context windows: values, seq, pos, tokens, acts."""
    B, T, F = z.shape
    N = state.values.shape[1]
    flat = jnp.where(valid[..., None], z, -jnp.inf).reshape(B * T, F).T           # [F, B*T]
    if B * T < N:                                                                   # top_k needs >= N columns
        flat = jnp.pad(flat, ((0, 0), (0, N - B * T)), constant_values=-jnp.inf)
    vals, idx = jax.lax.top_k(flat, N)                                              # [F, N]
    idx = jnp.minimum(idx, B * T - 1)                                               # padded columns are -inf
    b, t = idx // T, idx % T                                                        # [F, N]
    offsets = jnp.arange(state.left + state.right + 1) - state.left                 # [W]
    tpos = t[..., None] + offsets                                                   # [F, N, W]
    inside = (tpos >= 0) & (tpos < T)
    tpos = jnp.clip(tpos, 0, T - 1)
    bb = jnp.broadcast_to(b[..., None], tpos.shape)
    shown = inside & real[bb, tpos]
    win_tokens = jnp.where(shown, ids[bb, tpos], -1)
    feature = jnp.arange(F)[:, None, None]
    win_acts = jnp.where(shown, z[bb, tpos, jnp.broadcast_to(feature, tpos.shape)], 0.0)
    seq = jnp.where(jnp.isfinite(vals), seq_start + b, -1).astype(jnp.int32)
    return vals, seq, t.astype(jnp.int32), win_tokens.astype(jnp.int32), win_acts


def _merge_top(state: FeatureState, vals, seq, pos, tokens, acts):
    N = state.values.shape[1]
    all_vals = jnp.concatenate([state.values, vals], axis=1)                        # [F, 2N]
    top_vals, sel = jax.lax.top_k(all_vals, N)                                      # [F, N]
    take = lambda old, new: jnp.take_along_axis(                                     # noqa: E731
        jnp.concatenate([old, new], axis=1), sel.reshape(sel.shape + (1,) * (old.ndim - 2)), axis=1)
    return top_vals, take(state.seq, seq), take(state.pos, pos), take(state.tokens, tokens), take(state.acts, acts)


def _update_hist(state: FeatureState, z, fired):
    F = z.shape[-1]
    batch_max = jnp.max(jnp.where(fired, z, 0.0), axis=(0, 1))                      # [F]
    batch_exp = jnp.where(batch_max > 0, jnp.frexp(batch_max)[1], _NO_EXP)          # max < 2**exp
    exp = jnp.maximum(state.hist_exp, batch_exp).astype(jnp.int32)
    shift = jnp.clip(exp - state.hist_exp, 0, 31)
    coarse = jnp.arange(HIST_BINS)[None, :] >> shift[:, None]                       # [F, BINS] new bin of old bin
    hist = jax.vmap(lambda c, i: jnp.zeros((HIST_BINS,), jnp.int32).at[i].add(c))(state.hist, coarse)
    bins = jnp.floor(jnp.ldexp(z, _LOG2_BINS - exp)).astype(jnp.int32)              # [B, T, F]
    bins = jnp.clip(bins, 0, HIST_BINS - 1)
    flat = (jnp.arange(F) * HIST_BINS + bins).reshape(-1)
    hist = hist.reshape(-1).at[flat].add(fired.reshape(-1).astype(jnp.int32)).reshape(F, HIST_BINS)
    return hist, exp


def update(state: FeatureState, z, input_ids, valid, real=None, seq_start=0) -> FeatureState:
    """Fold one batch into ``state``.

    z [B, T, F] latents (any float dtype; compared in float32), input_ids [B, T], valid [B, T] bool (the
    positions that count), real [B, T] bool (real tokens, shown in context windows; default: valid),
    seq_start: global index of this batch's first sequence (the examples' ``seq``)."""
    z = jnp.asarray(z).astype(jnp.float32)
    valid = jnp.asarray(valid).astype(bool)
    real = valid if real is None else jnp.asarray(real).astype(bool)
    vals, seq, pos, tokens, acts = _top_candidates(state, z, jnp.asarray(input_ids), valid, real, seq_start)
    values, seq, pos, tokens, acts = _merge_top(state, vals, seq, pos, tokens, acts)
    fired = valid[..., None] & (z > 0)                                              # [B, T, F]
    hist, hist_exp = _update_hist(state, z, fired)
    return state.replace(
        values=values, seq=seq, pos=pos, tokens=tokens, acts=acts,
        fire_count=state.fire_count + jnp.sum(fired, axis=(0, 1), dtype=jnp.int32),
        act_sum=state.act_sum + jnp.sum(jnp.where(fired, z, 0.0), axis=(0, 1)),
        hist=hist, hist_exp=hist_exp, n_tokens=state.n_tokens + jnp.sum(valid, dtype=jnp.int32))


@dataclasses.dataclass
class FeatureData:
    """Host copy of a `FeatureState` (numpy), with helpers per feature."""

    values: np.ndarray        # [F, N]
    seq: np.ndarray           # [F, N]
    pos: np.ndarray           # [F, N]
    tokens: np.ndarray        # [F, N, W]
    acts: np.ndarray          # [F, N, W]
    fire_count: np.ndarray    # [F]
    act_sum: np.ndarray       # [F]
    hist: np.ndarray          # [F, HIST_BINS]
    hist_exp: np.ndarray      # [F]
    n_tokens: int
    left: int
    right: int

    @classmethod
    def from_state(cls, state: FeatureState) -> "FeatureData":
        host = jax.device_get(state)
        return cls(**{f.name: np.asarray(getattr(host, f.name)) for f in dataclasses.fields(cls)
                      if f.name not in ("n_tokens", "left", "right")},
                   n_tokens=int(host.n_tokens), left=state.left, right=state.right)

    @property
    def d_sae(self) -> int:
        return self.values.shape[0]

    @property
    def density(self) -> np.ndarray:
        """[F] fraction of valid positions where each feature fired."""
        return self.fire_count / max(self.n_tokens, 1)

    @property
    def mean_act(self) -> np.ndarray:
        """[F] mean activation when firing (0 for features that never fired)."""
        return np.where(self.fire_count > 0, self.act_sum / np.maximum(self.fire_count, 1), 0.0)

    @property
    def max_act(self) -> np.ndarray:
        """[F] largest activation seen (0 for features that never fired)."""
        return np.maximum(self.values[:, 0], 0.0)

    def hist_edges(self, feature: int) -> np.ndarray:
        """[HIST_BINS + 1] bin edges of ``hist[feature]`` (all zeros if it never fired)."""
        if self.hist_exp[feature] == _NO_EXP:
            return np.zeros(HIST_BINS + 1)
        return np.linspace(0.0, 2.0 ** int(self.hist_exp[feature]), HIST_BINS + 1)

    def examples(self, feature: int) -> list[dict]:
        """The feature's examples where it fired (activation > 0), strongest first: dicts with ``value``,
        ``seq``, ``pos``, ``tokens`` (context ids, -1 = none) and ``acts``; the example token is at
        index ``left``."""
        out = []
        for j in range(self.values.shape[1]):
            if not self.values[feature, j] > 0:
                break
            out.append({"value": float(self.values[feature, j]), "seq": int(self.seq[feature, j]),
                        "pos": int(self.pos[feature, j]), "tokens": self.tokens[feature, j].tolist(),
                        "acts": self.acts[feature, j].tolist()})
        return out
