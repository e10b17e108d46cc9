"""Export JAX SAEs to SAELens / sparsify / Qwen-Scope folders (atomically, with a README model card).

Layout of ``dst``:

    saelens     one SAE: dst/ is the SAELens folder; several: dst/<TransformerLens hook name>/ each
    sparsify    dst/<hook point>/ for every SAE (sparsify's repository layout), e.g. dst/layers.3.mlp/
    qwen-scope  dst/layer{N}.sae.pt for every (residual-stream, TopK) SAE + dst/qwen_scope.json

plus ``dst/README.md``. When two SAEs share a hook the folder name gets ``__<variant>``. Everything is
written into a temporary sibling folder first and renamed into place, so a failure leaves nothing behind;
an existing ``dst`` is refused unless ``force``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from qwen_sae_jax.atomic import atomic_directory, check_destination
from qwen_sae_jax.errors import UserError, did_you_mean
from qwen_sae_jax.interop import qwen_scope, saelens, sparsify
from qwen_sae_jax.interop.convert import sae_to_raw
from qwen_sae_jax.interop.hook_names import to_transformer_lens
from qwen_sae_jax.interop.model_card import render_model_card
from qwen_sae_jax.interop.raw import RawSAE

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE

EXPORT_FORMATS = ("saelens", "sparsify", "qwen-scope")


def _folder_names(raws: Mapping[str, RawSAE], hook_to_folder) -> dict[str, str]:
    """Member name -> folder name: the converted hook name, plus ``__<variant>`` where hooks collide."""
    base = {name: hook_to_folder(raw.hook_name) if raw.hook_name else name for name, raw in raws.items()}
    counts: dict[str, int] = {}
    for b in base.values():
        counts[b] = counts.get(b, 0) + 1
    out = {}
    for name, b in base.items():
        variant = name.split("__", 1)[1] if "__" in name else name
        out[name] = b if counts[b] == 1 else f"{b}__{variant}"
    if len(set(out.values())) != len(out):
        raise UserError(f"cannot give the SAEs distinct folder names: {out}")
    return out


def export_saes(saes: Mapping[str, "SAE"], dst: str | os.PathLike, format: str, *, force: bool = False,
                eval_table_md: str | None = None, log_densities: Mapping[str, np.ndarray] | None = None,
                context_size: int | None = None) -> Path:
    """Write ``{name: SAE}`` to ``dst`` in ``format``; returns ``dst``.

    ``log_densities``: ``{name: log10 feature density [d_sae]}`` (SAELens' sparsity.safetensors).
    ``eval_table_md``: a Markdown table embedded in the README model card.
    """
    if format not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {format!r}{did_you_mean(format, EXPORT_FORMATS)}; "
                        f"valid: {', '.join(EXPORT_FORMATS)}")
    if not saes:
        raise UserError("nothing to export: no SAEs given")
    dst = check_destination(dst, force)
    raws = {name: sae_to_raw(sae) for name, sae in saes.items()}
    log_densities = dict(log_densities or {})
    with atomic_directory(dst, force) as tmp:
        if format == "saelens":
            if len(raws) == 1:
                (name, raw), = raws.items()
                saelens.write_saelens(raw, tmp, log_feature_density=log_densities.get(name),
                                      context_size=context_size)
                listed = [(name, raw)]
            else:
                folders = _folder_names(raws, to_transformer_lens)
                for name, raw in raws.items():
                    (tmp / folders[name]).mkdir()
                    saelens.write_saelens(raw, tmp / folders[name], log_feature_density=log_densities.get(name),
                                          context_size=context_size)
                listed = [(folders[n], r) for n, r in raws.items()]
        elif format == "sparsify":
            folders = _folder_names(raws, lambda hook: hook)
            for name, raw in raws.items():
                (tmp / folders[name]).mkdir()
                sparsify.write_sparsify(raw, tmp / folders[name])
            listed = [(folders[n], r) for n, r in raws.items()]
        else:
            qwen_scope.write_qwen_scope(list(raws.values()), tmp)
            listed = [(qwen_scope.layer_file(int(str(r.hook_name).split(".")[1])), r) for r in raws.values()]
        (tmp / "README.md").write_text(render_model_card(format, listed, eval_table_md))
    return dst
