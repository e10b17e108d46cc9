"""Reward terms of `qwen-sae rl`: a text-level repetition score and an SAE-derived feature penalty.

    reward(response) = -(c_rep * repetition(response) + c_sae * sae_penalty(response))

**Repetition** (`repetition_score`): the fraction of the response's n-grams that repeat an earlier n-gram of the
same response, ``1 - #distinct n-grams / #n-grams`` (rep-n of Welleck et al. 2019), over its tokens (stop
tokens left out), whitespace-separated words or characters; 0 when it has fewer than n units.

**SAE penalty** (`sae_penalty`): for a hook with SAE encoder columns F (the features file's features of that
hook), the activation of feature f at the residual ``h`` is ``a_f(h) = pre_f(h) * [pre_f(h) > theta_f]`` with the
SAE's own pre-activation ``pre_f`` (`posttrain.sasft.probe_columns`: act_scale and b_dec folded in) and theta_f
the SAE's threshold (JumpReLU, BatchTopK at inference) or 0 (TopK, ReLU: the TopK selection among all latents is
not applied, so a_f is the latent's ReLU, an upper bound of the TopK latent). Per response::

    sae_penalty = sum_{hooks} sum_{t in response} sum_{f in F_hook} a_f(h_t)     [/ #response tokens: reduce=mean]

``h_t`` is the activation at the hook at response token t in the policy's own forward pass over prompt +
response (the same pass that scores the rollout's log-probabilities).

**Features file**: (hook, feature) pairs, read by `posttrain.synthesis.read_targets` (the package's one reader of
such files): ``{"features": [{"hook": "layers.2", "feature": 17}, ...]}`` (other keys ignored), a list of pairs,
or a `qwen-sae contrast --json` file (its ``last`` / ``mean_diff`` lists). `features_from_contrast` takes the top
features of another ranking of a contrast file (default ``mean`` / ``mean_diff``, the one for response tokens);
`write_features` writes a file.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.errors import UserError

if TYPE_CHECKING:
    from qwen_sae_jax.sae import SAE

THRESHOLD_ARCHITECTURES = ("jumprelu", "batchtopk")


def repeated_ngram_fraction(units: Sequence, n: int) -> float:
    """``1 - #distinct n-grams / #n-grams`` of ``units`` (0.0 with fewer than ``n`` units)."""
    grams = [tuple(units[i:i + n]) for i in range(len(units) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def repetition_score(text: str, tokens: Sequence[int], n: int, unit: str) -> float:
    """The repetition score of one response (module docstring): ``tokens`` for unit "token", else ``text``."""
    if unit == "token":
        units: Sequence = list(tokens)
    elif unit == "word":
        units = text.split()
    elif unit == "char":
        units = text
    else:
        raise UserError(f"repetition unit must be token, word or char, got {unit!r}")
    return repeated_ngram_fraction(units, n)


# ------------------------------------------------------------------------------------------ features file
def write_features(path: str | os.PathLike, features: Sequence[tuple[str, int]], **info) -> None:
    """Write ``[(hook, feature)]`` as a features file; ``info`` (JSON values) is kept beside them."""
    with open(path, "w", encoding="utf-8") as out:
        json.dump({**info, "features": [{"hook": h, "feature": int(f)} for h, f in features]}, out, indent=1)


def features_from_contrast(contrast_json: str | os.PathLike, top: int = 10, position: str = "mean",
                           by: str = "mean_diff") -> list[tuple[str, int]]:
    """The ``top`` features of each hook of a `qwen-sae contrast --json` file (positive set: the repetitive
    generations)."""
    from qwen_sae_jax.posttrain.features import from_contrast

    return [(f.hook, f.feature) for f in from_contrast(contrast_json, "pos", top, position, by)]


# ------------------------------------------------------------------------------------------ SAE penalty
@flax.struct.dataclass
class FeatureProbe:
    """The selected encoder columns of one hook's SAE in raw activation units, and their thresholds."""

    W: jax.Array            # [D, F] float32
    b: jax.Array            # [F] float32
    threshold: jax.Array    # [F] float32 (0 for TopK / ReLU SAEs)
    hook: str = flax.struct.field(pytree_node=False)


def check_rl_features(lm, saes: Mapping[str, "SAE"], features: Sequence[tuple[str, int]]) -> list[str]:
    """The hooks the features use (canonical names, in order); one UserError per problem: a hook the model
    lacks or no SAE reads, an SAE that does not fit the model, a feature index outside its SAE."""
    from qwen_sae_jax.lm import check_saes_fit

    check_saes_fit(lm, saes)
    by_hook = {sae.cfg.hook_name: sae for sae in saes.values()}
    hooks = []
    for name, f in features:
        resolved = lm.resolve_hooks([name])
        if len(resolved) != 1:
            raise UserError(f"each feature's hook must name one hook, not a glob: {name!r}")
        hook = resolved[0]
        if hook not in by_hook:
            raise UserError(f"the features file names hook {name!r} but no SAE in reward.sae.saes reads it; "
                            f"their hooks: {', '.join(sorted(by_hook))}")
        if f >= by_hook[hook].cfg.d_sae:
            raise UserError(f"feature {f} of {hook} is outside its SAE (d_sae={by_hook[hook].cfg.d_sae})")
        hooks.append(hook)
    return list(dict.fromkeys(hooks))


def build_feature_probes(lm, saes: Mapping[str, "SAE"], features: Sequence[tuple[str, int]]) -> tuple:
    """One `FeatureProbe` per hook of ``features`` (checked with `check_rl_features`)."""
    from qwen_sae_jax.posttrain.sasft import probe_columns

    hooks = check_rl_features(lm, saes, features)
    by_hook = {sae.cfg.hook_name: sae for sae in saes.values()}
    probes = []
    for hook in hooks:
        sae = by_hook[hook]
        mine = [f for name, f in features if lm.resolve_hooks([name])[0] == hook]
        W, b = probe_columns(sae, mine)
        if sae.cfg.architecture in THRESHOLD_ARCHITECTURES:
            theta = np.asarray(sae.threshold, np.float64)[np.asarray(mine)]
        else:
            theta = np.zeros(len(mine))
        probes.append(FeatureProbe(jnp.asarray(W, jnp.float32), jnp.asarray(b, jnp.float32),
                                   jnp.asarray(theta, jnp.float32), hook))
    return tuple(probes)


def feature_activations(acts: jax.Array, probe: FeatureProbe) -> jax.Array:
    """``a [B, T, F]`` float32 of activations ``acts [B, T, D]`` (module docstring)."""
    pre = jnp.einsum("btd,df->btf", acts.astype(jnp.float32), probe.W) + probe.b
    return jnp.where(pre > jnp.maximum(probe.threshold, 0.0), pre, 0.0)


def sae_penalty(acts: jax.Array, probe: FeatureProbe, response: jax.Array, reduce: str = "mean") -> jax.Array:
    """Per-response penalty ``[B]``: ``acts [B, T, D]``, ``response [B, T]`` (1 = a response token)."""
    a = jnp.sum(feature_activations(acts, probe), axis=-1)                   # [B, T]
    mask = response.astype(jnp.float32)
    total = jnp.sum(a * mask, axis=-1)
    return total / jnp.maximum(jnp.sum(mask, axis=-1), 1.0) if reduce == "mean" else total
