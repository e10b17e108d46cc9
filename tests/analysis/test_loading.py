"""analysis.loading.select_saes: SAEs chosen by name, canonical hook name or SAELens-style alias (globs), and the
one-line error for a pattern that matches nothing."""
from types import SimpleNamespace

import pytest

from qwen_sae_jax.analysis.loading import select_saes
from qwen_sae_jax.errors import UserError


def sae(hook: str):
    return SimpleNamespace(cfg=SimpleNamespace(hook_name=hook))


SAES = {"layers.0.linear_attn__topk-k32": sae("layers.0.linear_attn"), "layers.1.self_attn__topk-k32":
        sae("layers.1.self_attn"), "layers.1__topk-k32": sae("layers.1"), "layers.2.mlp__topk-k32": sae("layers.2.mlp"),
        "custom": sae("some.other.point")}


@pytest.mark.parametrize("pattern, names", [
    ("layers.1", ["layers.1__topk-k32"]),                                   # canonical hook
    ("layers.1__topk-k32", ["layers.1__topk-k32"]),                         # SAE name
    ("blocks.1.hook_resid_post", ["layers.1__topk-k32"]),                   # alias of the layer output
    ("blocks.0.hook_attn_out", ["layers.0.linear_attn__topk-k32"]),         # alias of a Gated DeltaNet mixer
    ("blocks.*.hook_attn_out", ["layers.0.linear_attn__topk-k32", "layers.1.self_attn__topk-k32"]),
    ("blocks.2.hook_mlp_out", ["layers.2.mlp__topk-k32"]),
    ("some.other.point", ["custom"]),                                       # a hook with no alias still matches
])
def test_select_by_name_hook_or_alias(pattern, names):
    assert list(select_saes(SAES, [pattern])) == names


def test_nothing_matched_is_one_error_naming_the_hooks():
    with pytest.raises(UserError, match=r"no SAE for 'blocks.3.hook_mlp_out'.*hooks: .*layers.2.mlp"):
        select_saes(SAES, ["blocks.3.hook_mlp_out"])
    assert select_saes(SAES, None) == SAES
