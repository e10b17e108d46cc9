"""Hook-name conventions of the formats.

Canonical names (this package, and sparsify's hookpoints on HF Qwen3 modules) -> TransformerLens names
(SAELens ``metadata.hook_name``):

    layers.N          residual after block N   blocks.N.hook_resid_post
    layers.N.input    residual before block N  blocks.N.hook_resid_pre
    layers.N.self_attn  attention output       blocks.N.hook_attn_out
    layers.N.mlp      MLP / MoE output         blocks.N.hook_mlp_out

Names outside this table pass through unchanged in both directions.
"""
from __future__ import annotations

import re

_CANON = re.compile(r"^layers\.(\d+)(?:\.(input|self_attn|mlp))?$")
_TL = re.compile(r"^blocks\.(\d+)\.(hook_resid_post|hook_resid_pre|hook_attn_out|hook_mlp_out)$")
_SITE_TO_TL = {None: "hook_resid_post", "input": "hook_resid_pre", "self_attn": "hook_attn_out",
               "mlp": "hook_mlp_out"}
_TL_TO_SITE = {v: k for k, v in _SITE_TO_TL.items()}


def to_transformer_lens(hook_name: str | None) -> str | None:
    if hook_name is None:
        return None
    m = _CANON.match(hook_name)
    if not m:
        return hook_name
    return f"blocks.{m.group(1)}.{_SITE_TO_TL[m.group(2)]}"


def from_transformer_lens(hook_name: str | None) -> str | None:
    if hook_name is None:
        return None
    m = _TL.match(hook_name)
    if not m:
        return hook_name
    site = _TL_TO_SITE[m.group(2)]
    return f"layers.{m.group(1)}" + (f".{site}" if site else "")


_ANY_MIXER = re.compile(r"^layers\.(\d+)(?:\.(input|self_attn|linear_attn|mlp))?$")


def layer_and_site(hook_name: str | None) -> tuple[int | None, str]:
    """``("layers.3.mlp") -> (3, "mlp_out")``; the residual after a block is site ``"resid_post"``; either token
    mixer (``self_attn``, Qwen3.5's ``linear_attn``) is site ``"attn_out"``, as its SAELens alias."""
    if hook_name is None:
        return None, "unknown"
    m = _ANY_MIXER.match(from_transformer_lens(hook_name) or "")
    if not m:
        return None, hook_name
    return int(m.group(1)), {None: "resid_post", "input": "resid_pre", "self_attn": "attn_out",
                             "linear_attn": "attn_out", "mlp": "mlp_out"}[m.group(2)]
