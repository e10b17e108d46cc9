"""One module per SAE architecture, each with the same two functions:

    encode(sae, x_in, implementation) -> z [B, d_sae]        dense latents of normalised inputs x_in [B, d_in]
    loss(sae, x_in, valid, dead_mask, implementation) -> (loss, LossTerms)

``x_in`` is already multiplied by ``act_scale`` and has its non-finite rows zeroed (``valid`` [B] marks
the others). Shared arithmetic lives in `common.py`; losses' conventions in `qwen_sae_jax.sae.losses`.
"""
from __future__ import annotations

from types import ModuleType

from qwen_sae_jax.errors import UserError, did_you_mean
from qwen_sae_jax.sae.architectures import batchtopk, jumprelu, relu, topk

_REGISTRY: dict[str, ModuleType] = {"topk": topk, "batchtopk": batchtopk, "jumprelu": jumprelu, "relu": relu}


def get_architecture(name: str) -> ModuleType:
    if name not in _REGISTRY:
        raise UserError(f"unknown SAE architecture {name!r}{did_you_mean(name, _REGISTRY)}; valid: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]
