"""Inputs of the steering tools: SAEs by hook point (from run directories or SAE paths) and text lists.

``load_hook_saes(["runs/tiny"], hooks=["layers.1", "layers.2.mlp"])`` -> ``{"layers.1": SAE, ...}``: every
SAE found at the sources (any format `qwen_sae_jax.interop.load_saes` reads), keyed by the canonical hook
it reads (``cfg.hook_name``). When several SAEs read the same hook (variants ``saes/<hook>__<variant>``)
``variant`` picks one. ``read_texts`` reads one text per line (plain text) or per JSON line (``column``).
"""
from __future__ import annotations

import fnmatch
import os
from typing import Sequence

from qwen_sae_jax.errors import UserError, did_you_mean


def _variant(name: str) -> str:
    return name.split("__", 1)[1] if "__" in name else ""


def load_hook_saes(sources: Sequence[str], hooks: Sequence[str] | None = None, variant: str | None = None,
                   num_layers: int | None = None) -> dict[str, object]:
    """``{canonical hook: SAE}`` for the SAEs at ``sources`` restricted to ``hooks`` (names, aliases or globs;
    None = all). ``num_layers`` (the model's) resolves aliases and checks the SAEs' hooks exist."""
    from qwen_sae_jax import hooks as hook_names
    from qwen_sae_jax.interop import load_saes

    if not sources:
        raise UserError("no SAE given: pass a training run directory or SAE folders/files")
    found: dict[str, list[tuple[str, object]]] = {}
    for source in sources:
        for name, sae in load_saes(source).items():
            hook = sae.cfg.hook_name
            if not hook:
                raise UserError(f"the SAE {name!r} at {source} does not say which hook it reads (cfg.hook_name)")
            if num_layers is not None:
                hook = hook_names.resolve_hooks([hook], num_layers)[0]
            found.setdefault(hook, []).append((name, sae))
    if variant is not None:
        found = {h: [(n, s) for n, s in items if _variant(n) == variant] for h, items in found.items()}
        found = {h: items for h, items in found.items() if items}
        if not found:
            raise UserError(f"no SAE of variant {variant!r} at {', '.join(sources)}")
    available = sorted(found)
    if hooks is None:
        chosen = available
    else:
        chosen = []
        for pattern in hooks:
            canonical = [pattern]
            if num_layers is not None and not any(ch in pattern for ch in "*?["):
                canonical = hook_names.resolve_hooks([pattern], num_layers)
            hits = [h for h in available if any(fnmatch.fnmatchcase(h, c) for c in canonical)]
            if not hits:
                raise UserError(f"no SAE for hook {pattern!r}{did_you_mean(pattern, available)}; hooks with an SAE: "
                                f"{', '.join(available)}")
            chosen.extend(h for h in hits if h not in chosen)
    out = {}
    for hook in chosen:
        items = found[hook]
        if len(items) > 1:
            raise UserError(f"several SAEs read {hook}: {', '.join(n for n, _ in items)}; choose one with variant "
                            f"(one of {', '.join(sorted({_variant(n) for n, _ in items}))})")
        out[hook] = items[0][1]
    return out


def read_texts(path: str, column: str = "text") -> list[str]:
    """Texts from ``path``: a ``.jsonl`` file (the ``column`` field of each object, or plain JSON strings) or
    a plain text file (one text per non-empty line). A leading ``tiny:`` is a path inside the embedded
    model's folder. Raises UserError when the file is missing or holds no text."""
    from qwen_sae_jax.data.text import TextSourceConfig, open_documents

    if not path.startswith("tiny:") and not os.path.isfile(path):
        raise UserError(f"text file {path!r} does not exist")
    if not path.startswith("tiny:") and os.path.getsize(path) == 0:
        raise UserError(f"text file {path!r} is empty: it needs one text per line (or a JSON object per line)")
    try:
        docs = open_documents(TextSourceConfig(files=[path], text_column=column, text_unit="line"))
    except UserError as err:
        raise UserError(f"cannot read texts from {path!r}: {err}") from None
    texts = [d for d in docs if isinstance(d, str) and d.strip()]
    if not texts:
        raise UserError(f"text file {path!r} holds no non-empty text")
    return texts
