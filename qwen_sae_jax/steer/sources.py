"""Inputs of the steering tools: SAEs by hook point (from run directories or SAE paths) and text lists.

``load_hook_saes(["runs/tiny"], hooks=["layers.1", "layers.2.mlp"])`` -> ``{"layers.1": SAE, ...}``: every
SAE found at the sources (any format `qwen_sae_jax.interop.load_saes` reads), keyed by the canonical hook
it reads (``cfg.hook_name``). When several SAEs read the same hook (variants ``saes/<hook>__<variant>``)
``variant`` picks one. A source that is a Hugging Face repo id (``owner/name``, no local path of that name) is
read from the hub at ``revision``, downloading only the SAEs of ``hooks`` (all of them without ``hooks``).
``read_texts`` reads one text per line (plain text) or per JSON line (``column``).
"""
from __future__ import annotations

import fnmatch
import os
from typing import TYPE_CHECKING, Callable, Sequence

from qwen_sae_jax.errors import UserError, did_you_mean

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE


def _variant(name: str) -> str:
    return name.split("__", 1)[1] if "__" in name else ""


def canonical_hook(name: str) -> str:
    """The canonical name of a hook name or SAELens alias (``blocks.2.hook_mlp_out`` -> ``layers.2.mlp``)."""
    from qwen_sae_jax.hooks import parse

    layer, site = parse(name)
    return f"layers.{layer}" + (f".{site}" if site else "")


def _matches(hook: str, pattern: str) -> bool:
    """Whether canonical ``hook`` matches a name, alias or glob over either."""
    from qwen_sae_jax.hooks import alias_of

    if not any(ch in pattern for ch in "*?["):    # blocks.N.hook_attn_out: whichever mixer layer N has
        return hook == canonical_hook(pattern) or alias_of(hook) == pattern
    return fnmatch.fnmatchcase(hook, pattern) or fnmatch.fnmatchcase(alias_of(hook), pattern)


def _load_source(source: str, hooks: Sequence[str] | None, revision: str | None, strict: bool,
                 announce: Callable[[str], None] | None) -> dict:
    """Every SAE at a local ``source``; of a hub repo id only those of ``hooks`` (`hub.select`'s ``strict``)."""
    from qwen_sae_jax.interop import hub, load_saes
    from qwen_sae_jax.interop.load import hub_repo_id

    repo_id = hub_repo_id(source, revision)
    if repo_id is None:
        return load_saes(source)
    return hub.load_saes_from_hub(repo_id, revision=revision, hooks=hooks, strict=strict, announce=announce)


def load_hook_saes(sources: Sequence[str], hooks: Sequence[str] | None = None, variant: str | None = None, *,
                   revision: str | None = None, announce: Callable[[str], None] | None = None) -> dict[str, SAE]:
    """``{canonical hook: SAE}`` for the SAEs at ``sources`` restricted to ``hooks`` (names, aliases or globs;
    None = all), in the order of ``hooks``. ``revision``: of the sources that are hub repo ids (refused for local
    paths); ``announce``: given one line per hub repo saying how many files are fetched."""
    if not sources:
        raise UserError("no SAE given: pass a training run directory or SAE folders/files")
    found: dict[str, list[tuple[str, SAE]]] = {}
    for source in sources:
        # one source: each hook must be in it; several: a hook may be in any of them (checked below)
        for name, sae in _load_source(source, hooks, revision, len(sources) == 1, announce).items():
            if not sae.cfg.hook_name:
                raise UserError(f"the SAE {name!r} at {source} does not say which hook it reads (cfg.hook_name)")
            found.setdefault(canonical_hook(sae.cfg.hook_name), []).append((name, sae))
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
            hits = [h for h in available if _matches(h, pattern)]
            if not hits:
                raise UserError(f"no SAE for hook {pattern!r}{did_you_mean(pattern, available)}; hooks with an SAE: "
                                f"{', '.join(available)}")
            chosen.extend(h for h in hits if h not in chosen)
    out: dict[str, SAE] = {}
    for hook in chosen:
        items = found[hook]
        if len(items) > 1:
            raise UserError(f"several SAEs read {hook}: {', '.join(n for n, _ in items)}; choose one with variant "
                            f"(one of {', '.join(sorted({_variant(n) for n, _ in items}))})")
        out[hook] = items[0][1]
    return out


def model_name_of(saes: dict, given: str | None) -> str:
    """``given``, else the SAEs' common ``cfg.model_name``, else "tiny"."""
    if given:
        return given
    names = {s.cfg.model_name for s in saes.values() if s.cfg.model_name}
    if len(names) > 1:
        raise UserError(f"the SAEs come from different models ({', '.join(sorted(names))}); "
                        "pass the model explicitly (--model / model:)")
    return names.pop() if names else "tiny"


def read_texts(path: str, column: str = "text") -> list[str]:
    """Texts from ``path``: a ``.jsonl`` file (the ``column`` field of each object, or plain JSON strings) or
    a plain text file (one text per non-empty line). A leading ``tiny:`` is a path inside the embedded
    model's folder. Raises UserError when the file is missing, malformed or holds no text."""
    import json

    from qwen_sae_jax.data.text import read_utf8
    from qwen_sae_jax.lm import TINY_DIR

    file = os.path.join(TINY_DIR, path[len("tiny:"):]) if path.startswith("tiny:") else path
    if os.path.isdir(file):
        raise UserError(f"text file {path!r} is a folder; give one file (.jsonl or plain text, one text per line)")
    if not os.path.isfile(file):
        raise UserError(f"text file {path!r} does not exist")
    texts = []
    for number, line in enumerate(read_utf8(file).split("\n"), 1):   # JSON strings may hold U+2028
        if not line.strip():
            continue
        if not file.endswith(".jsonl"):
            texts.append(line.rstrip("\r"))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if isinstance(row, dict):
            if column not in row:
                raise UserError(f"{path}:{number}: no field {column!r}{did_you_mean(column, list(row))}; "
                                f"fields: {', '.join(map(str, row))}")
            row = row[column]
        if not isinstance(row, str):
            raise UserError(f"{path}:{number}: the text must be a string, got {type(row).__name__}")
        if row.strip():
            texts.append(row)
    if not texts:
        what = "is empty" if os.path.getsize(file) == 0 else "holds no non-empty text"
        raise UserError(f"text file {path!r} {what}: it needs one text per line (or a JSON object per line)")
    return texts
