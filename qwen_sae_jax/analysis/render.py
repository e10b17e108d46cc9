"""Plain-text views of features for terminals and notebooks: token strings, examples with the firing token
marked, logit-lens token lists.

    print(format_feature(data, lens, feature=12, tokenizer=lm.tokenizer))
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from qwen_sae_jax.errors import UserError


def check_feature(feature: int, d_sae: int) -> int:
    """``feature`` as an int, or a UserError saying the valid range."""
    try:
        index = int(feature)
    except (TypeError, ValueError):
        raise UserError(f"feature index {feature!r} is not an integer") from None
    if not 0 <= index < d_sae:
        raise UserError(f"feature index {index} is out of range: the SAE has d_sae={d_sae} features "
                        f"(0..{d_sae - 1})")
    return index


def token_strings(tokenizer, ids: Iterable[int]) -> dict[int, str]:
    """``{id: text}`` for each distinct id (each token decoded on its own; -1 and unknown ids are skipped).
    A token holding part of a multi-byte character decodes to U+FFFD."""
    out = {}
    vocab = len(tokenizer) if tokenizer is not None else 0
    for i in sorted({int(i) for i in ids}):
        if 0 <= i < vocab:
            out[i] = tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return out


def visible(text: str) -> str:
    """Whitespace made visible for one-line display (newline -> ⏎, tab -> ⇥)."""
    return text.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "")


def format_example(example: dict, strings: dict[int, str], left: int) -> str:
    """One example as text, the example token in [[ ]] with its activation."""
    parts = []
    for j, (tok, act) in enumerate(zip(example["tokens"], example["acts"])):
        if tok < 0:
            continue
        s = visible(strings.get(tok, f"<{tok}>"))
        parts.append(f"[[{s}]]" if j == left else s)
    return f"{example['value']:8.3f}  " + "".join(parts)


def format_feature(data, feature: int, tokenizer, lens=None, n_examples: int = 5, lens_row: int | None = None) -> str:
    """A text report of one feature: density, mean / max activation, top examples, logit lens.

    ``data`` is a `FeatureData`; ``lens`` a `LogitLens` over all features (or pass ``lens_row`` for a lens
    computed on a subset)."""
    feature = check_feature(feature, data.d_sae)
    examples = data.examples(feature)[:n_examples]
    ids = [t for e in examples for t in e["tokens"]]
    row = feature if lens_row is None else lens_row
    if lens is not None:
        ids += list(lens.top_ids[row]) + list(lens.bottom_ids[row])
    strings = token_strings(tokenizer, ids)
    density = data.density[feature]
    lines = [f"feature {feature}: fired on {int(data.fire_count[feature])} of {data.n_tokens} tokens "
             f"(density {density:.3%}), mean activation {data.mean_act[feature]:.3f}, max {data.max_act[feature]:.3f}"]
    if not examples:
        lines.append("  (never fired on this corpus)")
    for e in examples:
        lines.append("  " + format_example(e, strings, data.left))
    if lens is not None:
        fmt = lambda i, v: f"{visible(strings.get(int(i), '?'))!r} {v:+.2f}"  # noqa: E731
        lines.append("  promotes:   " + ", ".join(fmt(i, v) for i, v in zip(lens.top_ids[row], lens.top_values[row])))
        lines.append("  suppresses: " + ", ".join(fmt(i, v) for i, v in zip(lens.bottom_ids[row],
                                                                            lens.bottom_values[row])))
    return "\n".join(lines)


def top_features(data, by: str = "max", n: int = 10, min_count: int = 1) -> np.ndarray:
    """Indices of the ``n`` features with the largest ``by`` ("max", "mean", "density") among features that
    fired at least ``min_count`` times."""
    keys = {"max": data.max_act, "mean": data.mean_act, "density": data.density}
    if by not in keys:
        raise UserError(f"cannot rank features by {by!r}; valid: {', '.join(keys)}")
    score = np.where(data.fire_count >= min_count, keys[by], -np.inf)
    order = np.argsort(-score, kind="stable")[:n]
    return order[np.isfinite(score[order])]
