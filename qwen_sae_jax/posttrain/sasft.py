"""SASFT (Deng et al. 2025, arXiv 2507.14894): an auxiliary loss that keeps other languages' SAE features quiet
on reply tokens.

Notation (one hook; the SAE is frozen). The pre-activation of latent f at activation h [D] is the SAE's own
encoder input convention, ``pre_f(h) = (s * h - b_dec [if apply_b_dec_to_input]) @ W_enc[:, f] + b_enc[f]``
(``s`` = ``act_scale``; for a plain SAE this is ``h W_enc[:, f] + b_enc[f]``). Folded into raw units it is
``pre_f(h) = h @ W[:, f] + b[f]`` with ``W = s * W_enc[:, F]``, ``b = b_enc[F] - b_dec @ W_enc[:, F]``: only the
selected columns F are kept (`LanguageProbe`), so the extra cost is one [D, |F|] matmul per hook.

tau(f, l) = mean of pre_f(h_t) over the tokens t of language-l text (`language_tau`).

For a batch, with R the reply tokens, l(b) the reply language of sample b and O(b) the features whose
language is not l(b)::

    SASFT_hook = sum_{b, t in R_b, f in O(b)} relu(pre_f(h_bt) - tau(f, l(b)))  /  |{(b, t, f): t in R_b, f in O(b)}|
    loss = CE_reply + lambda * sum_hooks SASFT_hook

``zero_threshold`` replaces tau by 0 (the paper's zero-threshold variant). The mean is over all
(sample, reply token, feature) pairs of the global batch, so it does not depend on how the batch is sharded.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.posttrain.features import FeatureSet

if TYPE_CHECKING:
    from qwen_sae_jax.sae import SAE


@flax.struct.dataclass
class LanguageProbe:
    """The selected encoder columns of one hook's SAE, in raw activation units."""

    W: jax.Array        # [D, F] float32
    b: jax.Array        # [F] float32
    lang: jax.Array     # [F] int32: index of the language each feature marks
    tau: jax.Array      # [F, L] float32: tau(f, l)
    hook: str = flax.struct.field(pytree_node=False)


def probe_columns(sae, features: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(W [D, F], b [F])`` float64 numpy with ``pre_f(h) = h @ W[:, f] + b[f]`` (module docstring)."""
    idx = np.asarray(features, np.int64)
    W_enc = np.asarray(sae.W_enc, np.float64)[:, idx]                     # [D, F]
    b = np.asarray(sae.b_enc, np.float64)[idx]
    if sae.cfg.apply_b_dec_to_input:
        b = b - np.asarray(sae.b_dec, np.float64) @ W_enc
    return float(np.asarray(sae.act_scale)) * W_enc, b


def pre_activations(acts: jax.Array, probe: LanguageProbe) -> jax.Array:
    """``pre [B, T, F]`` float32 of activations ``acts [B, T, D]``."""
    return jnp.einsum("btd,df->btf", acts.astype(jnp.float32), probe.W) + probe.b


def sasft_term(acts: jax.Array, probe: LanguageProbe, reply: jax.Array, language: jax.Array,
               zero_threshold: bool = False) -> jax.Array:
    """SASFT_hook (module docstring): ``acts [B, T, D]``, ``reply [B, T]`` bool, ``language [B]`` int32 -> []."""
    pre = pre_activations(acts, probe)                                      # [B, T, F]
    tau = jnp.zeros((language.shape[0], probe.b.shape[0])) if zero_threshold else probe.tau.T[language]   # [B, F]
    other = probe.lang[None, :] != language[:, None]                        # [B, F]
    pairs = reply.astype(bool)[:, :, None] & other[:, None, :]              # [B, T, F]
    excess = jnp.where(pairs, jax.nn.relu(pre - tau[:, None, :]), 0.0)
    return jnp.sum(excess) / jnp.maximum(jnp.sum(pairs), 1)


def check_features(lm, saes: Mapping[str, "SAE"], features: FeatureSet, layers: Sequence[str] | None) -> list[str]:
    """The hooks to use (canonical names); one UserError per problem: a hook the model lacks or no SAE reads,
    an SAE that does not fit the model, a feature index outside its SAE."""
    from qwen_sae_jax.lm import check_saes_fit

    check_saes_fit(lm, saes)
    hooks = {f.hook: lm.resolve_hooks([f.hook]) for f in features.features}
    if any(len(v) != 1 for v in hooks.values()):
        raise UserError("each feature's hook must name one hook, not a glob: "
                        + ", ".join(h for h, v in hooks.items() if len(v) != 1))
    by_hook = {sae.cfg.hook_name: sae for sae in saes.values()}
    for f in features.features:
        hook = hooks[f.hook][0]
        if hook not in by_hook:
            raise UserError(f"the features file names hook {f.hook!r} but no SAE in sasft.saes reads it; "
                            f"their hooks: {', '.join(sorted(by_hook))}")
        if f.feature >= by_hook[hook].cfg.d_sae:
            raise UserError(f"feature {f.feature} of {hook} is outside its SAE (d_sae={by_hook[hook].cfg.d_sae})")
    chosen = list(dict.fromkeys(hooks[f.hook][0] for f in features.features))
    if layers is not None:
        wanted = lm.resolve_hooks(list(layers))
        missing = [h for h in wanted if h not in chosen]
        if missing:
            raise UserError(f"sasft.layers {missing} have no features in the features file (it names "
                            f"{', '.join(chosen)})")
        chosen = [h for h in chosen if h in wanted]
    return chosen


def build_probes(lm, saes: Mapping[str, "SAE"], features: FeatureSet, hooks: Sequence[str],
                 tau: Mapping[str, np.ndarray] | None = None) -> tuple[LanguageProbe, ...]:
    """One probe per hook; ``tau`` ({hook: [F, L]}) overrides the file's values (needed when it has none)."""
    by_hook = {sae.cfg.hook_name: sae for sae in saes.values()}
    probes = []
    for hook in hooks:
        mine = [f for f in features.features if lm.resolve_hooks([f.hook])[0] == hook]
        W, b = probe_columns(by_hook[hook], [f.feature for f in mine])
        if tau is not None:
            t = np.asarray(tau[hook], np.float64)
        elif features.has_tau:
            t = np.asarray([[f.tau[lang] for lang in features.languages] for f in mine if f.tau is not None])
        else:
            raise UserError("the features file has no tau and none was computed: set sasft.tau_files")
        lang = np.asarray([features.languages.index(f.language) for f in mine], np.int32)
        probes.append(LanguageProbe(jnp.asarray(W, jnp.float32), jnp.asarray(b, jnp.float32), jnp.asarray(lang),
                                    jnp.asarray(t, jnp.float32), hook))
    return tuple(probes)


def language_tau(lm, probes: Sequence[LanguageProbe], texts: Mapping[str, Sequence[str]], languages: Sequence[str],
                 max_tokens: int = 65536, ctx_len: int = 128, batch_size: int = 16) -> dict[str, np.ndarray]:
    """tau(f, l) ``{hook: [F, L]}``: mean pre-activation over every token (special tokens included, padding not)
    of the first ``max_tokens`` tokens of language l's texts, each cut to ``ctx_len`` tokens."""
    hooks = [p.hook for p in probes]
    missing = [lang for lang in languages if not texts.get(lang)]
    if missing:
        raise UserError(f"tau needs text of every language; none for {missing} (sasft.tau_files)")

    def sums(params, ids, mask, probes):                                   # ids, mask [batch_size, ctx_len]
        acts = lm.apply(params, ids, mask, capture=hooks, stop_after_capture=True)[1]
        return [jnp.sum(pre_activations(acts[p.hook], p) * mask[..., None], axis=(0, 1)) for p in probes]

    fn = jax.jit(sums)
    out = {h: np.zeros((p.b.shape[0], len(languages))) for h, p in zip(hooks, probes)}
    for j, lang in enumerate(languages):
        seqs = _token_budget(lm.tokenizer, texts[lang], max_tokens, ctx_len)
        acc = [np.zeros(out[h].shape[0]) for h in hooks]
        for i in range(0, len(seqs), batch_size):
            ids = np.full((batch_size, ctx_len), lm.pad_token_id, np.int32)
            mask = np.zeros((batch_size, ctx_len), np.int32)
            for r, seq in enumerate(seqs[i:i + batch_size]):
                ids[r, :len(seq)], mask[r, :len(seq)] = seq, 1
            for k, s in enumerate(fn(lm.params, jnp.asarray(ids), jnp.asarray(mask), tuple(probes))):
                acc[k] += np.asarray(s, np.float64)
        total = sum(len(s) for s in seqs)
        for k, h in enumerate(hooks):
            out[h][:, j] = acc[k] / total
    return out


def _token_budget(tokenizer, texts: Sequence[str], max_tokens: int, ctx_len: int) -> list[list[int]]:
    """Token lists of ``texts`` (each cut to ``ctx_len``) until ``max_tokens`` tokens in all."""
    seqs, total = [], 0
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"][:ctx_len])[:max_tokens - total]
        if ids:
            seqs.append(ids)
            total += len(ids)
        if total >= max_tokens:
            break
    if not seqs:
        raise UserError("the tau texts of a language encode to no tokens")
    return seqs
