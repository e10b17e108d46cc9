"""Language suppression (Qwen-Scope's language-mixing example): find features that separate Chinese from
English text and show that ablating / negatively steering them lowers the probability of Chinese tokens
when the model continues English prompts.

    from qwen_sae_jax.steer.language import language_suppression
    result = language_suppression(lm, sae, chinese_texts, english_texts, eval_texts)
    print(result.markdown())

1. Features are ranked with `contrast.rank_features` (Chinese = positive set) by ``mean_diff`` of the
   latents **averaged over each text's tokens** (``position="mean"``; the first ``max_tokens`` tokens).
2. Each condition is measured on the English ``eval_texts`` — raw text cut to ``prompt_tokens`` tokens, or
   (``eval_chat=True``) whole user turns rendered with the chat template — under the intervention at every
   position:
   ``p_chinese``   mean over the prompt's positions of the next-token probability mass on Chinese tokens
                   (teacher-forced; `chinese_token_ids`);
   ``gen_chinese`` share of greedily generated tokens (``new_tokens`` per prompt) that are Chinese tokens;
   ``gen_any``     share of the generated continuations that contain a Chinese token;
   ``ce``          the next-token cross-entropy on the prompt tokens (nats/token): the cost.
3. Conditions: unsteered; ablating the top n features (clamped to 0 with the SAE error term kept) for
   each n in ``ablate``; the same number of random features of similar firing rate (control); adding
   ``-alpha`` times the top feature's unit decoder direction and the unit difference-of-means direction
   (Chinese - English) for each alpha in ``alphas`` (multiples of the hook's mean activation norm), and
   the same for the first random control feature.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.errors import UserError

# CJK symbols and punctuation, CJK extension A, unified ideographs, half/full-width forms
_CJK = re.compile("[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")


def _byte_decoder() -> dict[str, int]:
    """Inverse of the byte-level BPE alphabet (GPT-2 / Qwen): printable bytes map to themselves, the other
    bytes to code points 256, 257, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


def token_bytes(tokenizer):
    """``(id, bytes)`` of every non-special token of a byte-level BPE vocabulary (Qwen, the tiny model); a token
    that is not byte-level (added / special text) gives its text's UTF-8 bytes."""
    decoder = _byte_decoder()
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if token is None or i in special:
            continue
        try:
            yield i, bytes(decoder[c] for c in token)
        except KeyError:
            yield i, token.encode("utf-8")


def chinese_token_ids(tokenizer) -> np.ndarray:
    """Ids of the tokens that write Chinese: their bytes contain a CJK character (ideographs, CJK punctuation,
    full-width forms), or they start with a UTF-8 lead byte 0xE3..0xE9 (the first bytes of a character in
    U+3000..U+9FFF split across tokens). Continuation-byte-only fragments are not counted (they also occur
    inside other scripts). Works for byte-level BPE vocabularies (Qwen, the tiny model)."""
    ids = [i for i, raw in token_bytes(tokenizer)
           if _CJK.search(raw.decode("utf-8", "ignore")) or (raw and 0xE3 <= raw[0] <= 0xE9)]
    return np.asarray(ids, np.int32)


@dataclasses.dataclass
class LanguageSuppression:
    """The before/after table of `language_suppression` and what it was computed from."""

    hook: str
    top: list[dict]                 # top-ranked features (Chinese - English), `Contrast.top` rows
    random_controls: list[int]
    scale: float                    # mean activation norm at the hook (alpha unit)
    rows: list[dict]                # condition, p_chinese, gen_chinese, ce
    n_chinese_tokens: int
    n_eval: int

    def markdown(self) -> str:
        base = self.rows[0]
        lines = [f"Hook `{self.hook}`; {self.n_eval} prompts; {self.n_chinese_tokens} Chinese tokens in the "
                 f"vocabulary; top features (Chinese - English, mean over tokens): "
                 + ", ".join(f"{r['feature']} ({r['mean_diff']:+.3f})" for r in self.top[:5]) + ".", "",
                 "| condition | P(Chinese next token) | change | Chinese share of generated tokens | continuations "
                 "with Chinese | prompt CE (nats/tok) |",
                 "|---|---|---|---|---|---|"]
        for r in self.rows:
            change = "" if r is base else f"{100 * (r['p_chinese'] / base['p_chinese'] - 1):+.0f}%" \
                if base["p_chinese"] > 0 else "-"
            lines.append(f"| {r['condition']} | {r['p_chinese']:.5f} | {change} | {100 * r['gen_chinese']:.1f}% | "
                         f"{100 * r['gen_any']:.0f}% | {r['ce']:.3f} |")
        return "\n".join(lines)


def _teacher_forced(lm, ids, mask, steering, chinese_mask):
    """Per row ``[B]``: summed P(Chinese) over real positions, their number, summed next-token NLL, targets."""
    from qwen_sae_jax.steer import run

    logits = run.logits(lm, ids, mask, steering).astype(jnp.float32)          # [B, T, V]
    logp = jax.nn.log_softmax(logits, axis=-1)
    real = jnp.asarray(mask, bool)                                            # [B, T]
    p_cjk = jnp.sum(jnp.exp(logp) * chinese_mask, axis=-1)                    # [B, T]
    nll = -jnp.take_along_axis(logp[:, :-1], jnp.asarray(ids)[:, 1:, None], axis=-1)[..., 0]   # [B, T-1]
    target = real[:, 1:] & real[:, :-1]
    return np.stack([np.asarray(x, np.float64) for x in (
        jnp.sum(jnp.where(real, p_cjk, 0.0), -1), real.sum(-1), jnp.sum(jnp.where(target, nll, 0.0), -1),
        target.sum(-1))], axis=1)                                             # [B, 4]


def measure_language(lm, prompts: Sequence[list[int]], steering, chinese_ids: np.ndarray, new_tokens: int,
                     batch_size: int = 32) -> dict:
    """``{"p_chinese", "gen_chinese", "ce"}`` of token-id prompts under ``steering`` (module docstring)."""
    from qwen_sae_jax.lm import pad_batch
    from qwen_sae_jax.steer import run

    chinese_mask = jnp.zeros((lm.config.vocab_size,), jnp.float32).at[jnp.asarray(chinese_ids)].set(1.0)
    is_cjk = np.zeros(lm.config.vocab_size, bool)
    is_cjk[chinese_ids] = True
    stops = set(lm.stop_token_ids())
    totals = np.zeros(4)               # P(Chinese) sum, positions, NLL sum, targets
    gen_cjk = gen_all = gen_any = 0
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        real = len(chunk)
        chunk += [chunk[-1]] * (min(batch_size, len(prompts)) - real)         # filler rows: one compiled shape
        ids, mask = pad_batch(chunk, pad_id=lm.pad_token_id, side="left")
        totals += _teacher_forced(lm, ids, mask, steering, chinese_mask)[:real].sum(0)
        if new_tokens:
            out, lengths = run.generate_tokens(lm, ids, mask, steering, max_new_tokens=new_tokens)
            for row, k in list(zip(out, lengths))[:real]:
                tokens = [t for t in row[:k].tolist() if t not in stops]
                n_cjk = int(is_cjk[tokens].sum()) if tokens else 0
                gen_cjk, gen_all, gen_any = gen_cjk + n_cjk, gen_all + len(tokens), gen_any + (n_cjk > 0)
    return {"p_chinese": totals[0] / max(totals[1], 1), "gen_chinese": gen_cjk / max(gen_all, 1),
            "gen_any": gen_any / len(prompts), "ce": totals[2] / max(totals[3], 1)}


def language_suppression(lm, sae, chinese_texts: Sequence[str], english_texts: Sequence[str],
                         eval_texts: Sequence[str], *, ablate: Sequence[int] = (1, 3, 10),
                         alphas: Sequence[float] = (0.5, 1.0, 2.0), prompt_tokens: int = 48, new_tokens: int = 16,
                         max_tokens: int = 64, batch_size: int = 32, seed: int = 0,
                         eval_chat: bool = False) -> LanguageSuppression:
    """Rank Chinese-vs-English features at ``sae``'s hook and measure the conditions (module docstring).

    ``eval_texts`` must be English texts that were not used for the ranking."""
    from qwen_sae_jax.steer.contrast import matched_random_features, rank_features
    from qwen_sae_jax.steer.interventions import ablate_features, add_direction, steer_feature

    hook = lm.resolve_hooks([sae.cfg.hook_name])[0]
    if not list(eval_texts):
        raise UserError("eval_texts is empty: give English texts to continue")
    contrast = rank_features(lm, {hook: sae}, chinese_texts, english_texts, batch_size=batch_size,
                             max_tokens=max_tokens)[hook]["mean"]
    order = contrast.ranking("mean_diff")
    pooled = (contrast.pos.rate["mean"] + contrast.neg.rate["mean"]) / 2
    n_max = max(ablate, default=1)
    randoms = matched_random_features(pooled, exclude=order[:max(n_max, 10)], targets=order[:n_max].tolist(),
                                      n=n_max, seed=seed)
    scale = (contrast.pos.norm["mean"] + contrast.neg.norm["mean"]) / 2
    ids, mask = lm.tokenize(list(eval_texts), chat=eval_chat)
    prompts = [row[m > 0].tolist() for row, m in zip(ids, mask)]
    if not eval_chat:   # a chat prompt is kept whole: cutting it would drop the generation prompt
        prompts = [p[:prompt_tokens] for p in prompts]
    prompts = [p for p in prompts if len(p) >= 2]
    if not prompts:
        raise UserError("every eval text encodes to fewer than 2 tokens")
    chinese = chinese_token_ids(lm.tokenizer)
    if chinese.size == 0:
        raise UserError("the tokenizer has no Chinese tokens; nothing to suppress")

    conditions: list[tuple[str, Any]] = [("unsteered", None)]
    for n in ablate:
        conditions.append((f"ablate top {n}", ablate_features(sae, [int(i) for i in order[:n]])))
        if len(randoms) >= n:
            conditions.append((f"ablate {n} random (control)", ablate_features(sae, randoms[:n])))
    for alpha in alphas:
        conditions.append((f"top feature {int(order[0])}, alpha -{alpha:g}",
                           steer_feature(sae, int(order[0]), -abs(alpha) * scale)))
        conditions.append((f"diff-of-means, alpha -{alpha:g}",
                           add_direction(hook, contrast.direction, -abs(alpha) * scale, normalize=True)))
        if randoms:
            conditions.append((f"random feature {randoms[0]}, alpha -{alpha:g} (control)",
                               steer_feature(sae, randoms[0], -abs(alpha) * scale)))
    rows = [{"condition": name, **measure_language(lm, prompts, steering, chinese, new_tokens, batch_size)}
            for name, steering in conditions]
    return LanguageSuppression(hook=hook, top=contrast.top(10), random_controls=randoms, scale=scale, rows=rows,
                               n_chinese_tokens=int(chinese.size), n_eval=len(prompts))
