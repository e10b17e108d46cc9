"""Steering interventions: add a direction, clamp / scale / ablate SAE features, at any hook point.

Two kinds, both ``flax.struct`` pytrees whose arrays are leaves (so a sweep over alpha, features or
directions reuses one compiled program, see `qwen_sae_jax.steer.run`) and which are also plain
functions ``act [B, T, D] -> act [B, T, D]`` usable with ``lm.logits(..., interventions=...)``,
``lm.generate(..., interventions=...)`` and ``lm.apply``:

``AddDirection``    ``h' = h + alpha * d`` for a direction ``d [D]`` in raw activation units.
                    `feature_direction` gives a feature's decoder row in raw units (``W_dec[i] / act_scale``),
                    unit-normalised by default (then ``alpha`` is the L2 norm of the added vector).
``ClampFeatures``   encode ``z = sae.encode(h)``, set (``mode="set"``) or scale (``mode="scale"``) features
                    ``i`` to get ``z'``, decode, and add back the SAE error term:
                    ``h' = x_hat(z') + (h - x_hat(z)) = h + sum_i (z'_i - z_i) * W_dec[i] / act_scale``.
                    Only the chosen features change (the reconstruction error and every other latent are
                    kept as they were); a value equal to the current one leaves ``h`` exactly unchanged.
                    Ablation is ``mode="set"`` with value 0 (`ablate_features`).

Where (``where``):  ``"all"`` every call; ``"prompt"`` only model calls over more than one position
(a forward pass, or generation's prefill of the prompt); ``"generated"`` only calls over a single
position (generation's decode steps, i.e. the activations of generated tokens). This uses the static
sequence length of each call: `LanguageModel.generate_tokens` pads prompts to at least 16 positions, so its
prefill is never a single position. In generation, prompt-only steering still reaches the generated
tokens through the (steered) keys/values of the prompt; generated-only steering does not change the
first generated token (it is predicted from the prompt).
"""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.errors import UserError, did_you_mean

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE

WHERE = ("all", "prompt", "generated")
CLAMP_MODES = ("set", "scale")


def _applies(where: str, seq_len: int) -> bool:
    """Whether an intervention placed ``where`` acts on a model call over ``seq_len`` positions (static)."""
    if where == "all":
        return True
    return seq_len > 1 if where == "prompt" else seq_len == 1


def _check_where(where: str) -> None:
    if where not in WHERE:
        raise UserError(f"where={where!r} is not valid{did_you_mean(str(where), WHERE)}; valid: {', '.join(WHERE)}")


class AddDirection(flax.struct.PyTreeNode, eq=False):  # eq=False: identity hash, a key of compiled-program caches
    """``h' = h + alpha * direction`` at hook ``hook`` (positions chosen by ``where``, see module docstring)."""

    direction: jax.Array  # [D] raw activation units
    alpha: jax.Array      # [] float32
    hook: str = flax.struct.field(pytree_node=False)
    where: str = flax.struct.field(pytree_node=False, default="all")

    def __call__(self, act: jax.Array) -> jax.Array:  # act [B, T, D]
        if not _applies(self.where, act.shape[1]):
            return act
        delta = self.alpha.astype(jnp.float32) * self.direction.astype(jnp.float32)  # [D]
        return (act.astype(jnp.float32) + delta).astype(act.dtype)


class ClampFeatures(flax.struct.PyTreeNode, eq=False):  # eq=False: identity hash, a key of compiled-program caches
    """Set or scale SAE features ``features`` at the SAE's hook, keeping the SAE error term (module docstring).

    ``mode="set"``: ``z'_i = values_i``; ``mode="scale"``: ``z'_i = values_i * z_i``.
    """

    sae: SAE
    features: jax.Array    # [n] int32, distinct
    values: jax.Array      # [n] float32
    hook: str = flax.struct.field(pytree_node=False)
    mode: str = flax.struct.field(pytree_node=False, default="set")
    where: str = flax.struct.field(pytree_node=False, default="all")

    def __call__(self, act: jax.Array) -> jax.Array:  # act [B, T, D]
        if not _applies(self.where, act.shape[1]):
            return act
        z = self.sae.encode(act)                                              # [B, T, d_sae]
        current = jnp.take(z, self.features, axis=-1).astype(jnp.float32)    # [B, T, n]
        values = self.values.astype(jnp.float32)
        new = values if self.mode == "set" else current * values
        rows = jnp.take(self.sae.W_dec, self.features, axis=0).astype(jnp.float32)  # [n, D] (normalised units)
        rows = rows / self.sae.act_scale.astype(jnp.float32)                  # raw units, as sae.decode
        delta = jnp.einsum("btn,nd->btd", new - current, rows)                # [B, T, D]
        return (act.astype(jnp.float32) + delta).astype(act.dtype)


Steering = AddDirection | ClampFeatures


# ------------------------------------------------------------------------------------------ constructors
def _check_feature(sae, feature) -> int:
    d_sae = sae.cfg.d_sae
    if isinstance(feature, (bool, np.bool_)) or not isinstance(feature, (int, np.integer)):
        raise UserError(f"feature index must be an integer, got {feature!r}")
    if not 0 <= int(feature) < d_sae:
        raise UserError(f"feature {int(feature)} is out of range for the SAE at {sae.cfg.hook_name or '?'}: "
                        f"valid indices are 0..{d_sae - 1} (d_sae={d_sae})")
    return int(feature)


def _sae_hook(sae) -> str:
    hook = sae.cfg.hook_name
    if not hook:
        raise UserError("this SAE does not say which hook it reads (cfg.hook_name is empty); set it, e.g. "
                        "sae.replace(cfg=sae.cfg.replace(hook_name='layers.1'))")
    return hook


def feature_direction(sae, feature: int, normalize: bool = True) -> jax.Array:
    """Feature ``feature``'s decoder row in raw activation units, ``W_dec[i] / act_scale`` ``[D]`` float32;
    unit L2 norm when ``normalize`` (the default)."""
    i = _check_feature(sae, feature)
    row = sae.W_dec[i].astype(jnp.float32) / sae.act_scale.astype(jnp.float32)
    if normalize:
        norm = jnp.linalg.norm(row)
        if not bool(norm > 0):
            raise UserError(f"feature {i} has a zero decoder row; it has no direction to steer along")
        row = row / norm
    return row


def add_direction(hook: str, direction, alpha: float, where: str = "all", normalize: bool = False) -> AddDirection:
    """``h' = h + alpha * direction`` at ``hook`` (a canonical hook name); ``direction [D]`` in raw units,
    unit-normalised first when ``normalize``."""
    _check_where(where)
    d = jnp.asarray(direction, jnp.float32)
    if d.ndim != 1 or d.shape[0] == 0:
        raise UserError(f"a steering direction must be a vector [d_model], got shape {tuple(d.shape)}")
    if not bool(jnp.all(jnp.isfinite(d))):
        raise UserError("the steering direction contains NaN or inf")
    if normalize:
        norm = jnp.linalg.norm(d)
        if not bool(norm > 0):
            raise UserError("cannot normalise a zero steering direction")
        d = d / norm
    return AddDirection(direction=d, alpha=jnp.asarray(alpha, jnp.float32), hook=hook, where=where)


def steer_feature(sae, feature: int, alpha: float, where: str = "all", normalize: bool = True) -> AddDirection:
    """Add ``alpha`` times feature ``feature``'s decoder direction (unit norm by default) at the SAE's hook.
    With ``normalize=False`` the raw decoder row is used, so ``alpha`` is the change of the feature's
    activation that the added vector decodes from."""
    return add_direction(_sae_hook(sae), feature_direction(sae, feature, normalize), alpha, where)


def clamp_features(sae, features: int | Sequence[int], values: float | Sequence[float], mode: str = "set",
                   where: str = "all") -> ClampFeatures:
    """Set (``mode="set"``) or scale (``mode="scale"``) SAE features, keeping the error term (module docstring).

    ``values`` is one number for every feature or one per feature."""
    _check_where(where)
    if mode not in CLAMP_MODES:
        raise UserError(f"clamp mode {mode!r} is not valid{did_you_mean(str(mode), CLAMP_MODES)}; "
                        f"valid: {', '.join(CLAMP_MODES)}")
    feats = [features] if isinstance(features, (int, np.integer)) else list(features)
    if not feats:
        raise UserError("clamp_features needs at least one feature index")
    feats = [_check_feature(sae, f) for f in feats]
    if len(set(feats)) != len(feats):
        raise UserError(f"feature indices must be distinct, got {feats}")
    vals = np.broadcast_to(np.asarray(values, np.float32), (len(feats),)) if np.ndim(values) == 0 else \
        np.asarray(values, np.float32)
    if vals.shape != (len(feats),):
        raise UserError(f"got {vals.size} values for {len(feats)} features; give one value or one per feature")
    if not np.all(np.isfinite(vals)):
        raise UserError("clamp values must be finite numbers")
    return ClampFeatures(sae=sae, features=jnp.asarray(feats, jnp.int32), values=jnp.asarray(vals),
                         hook=_sae_hook(sae), mode=mode, where=where)


def ablate_features(sae, features: int | Sequence[int], where: str = "all") -> ClampFeatures:
    """Clamp ``features`` to 0 (with the error term kept)."""
    return clamp_features(sae, features, 0.0, mode="set", where=where)


# ------------------------------------------------------------------------------------------ combining
def _compose(fns: list[Callable]) -> Callable:
    if len(fns) == 1:
        return fns[0]

    def composed(act):
        for fn in fns:
            act = fn(act)
        return act
    return composed


def interventions(steering: Steering | Iterable[Steering]) -> dict[str, Callable]:
    """``{hook: fn}`` for ``lm.logits / lm.generate / lm.apply``: several steerings at several hooks; those
    at the same hook are applied in the order given. Hook names may be aliases; they are resolved here
    only when the model is known (see `validate`)."""
    items = [steering] if isinstance(steering, (AddDirection, ClampFeatures)) else list(steering)
    by_hook: dict[str, list[Callable]] = defaultdict(list)
    for item in items:
        if not isinstance(item, (AddDirection, ClampFeatures)):
            raise UserError(f"a steering must be an AddDirection or ClampFeatures, got {type(item).__name__}")
        by_hook[item.hook].append(item)
    return {hook: _compose(fns) for hook, fns in by_hook.items()}


def validate(lm, steering: Iterable[Steering]) -> list[Steering]:
    """Check each steering against the model: hook exists (resolved to its canonical name), direction /
    SAE width equals the hook's width. Returns the steerings with canonical hook names."""
    out = []
    d_model = lm.config.hidden_size
    for item in steering:
        names = lm.resolve_hooks([item.hook])
        if len(names) != 1:
            raise UserError(f"a steering targets one hook; {item.hook!r} matches {len(names)}: {', '.join(names)}")
        width = item.direction.shape[0] if isinstance(item, AddDirection) else item.sae.cfg.d_in
        if width != d_model:
            raise UserError(f"steering at {names[0]} has width {width} but the model's activations there are "
                            f"{d_model} wide")
        out.append(item.replace(hook=names[0]))
    return out
