"""The SAE architectures by name: each module in `architectures/` calls `register` once when it is imported,
and the base code (`core.SAE`, `losses.sae_loss`) looks them up with `get_architecture`.

Arrows point one way: the base code imports this module, never an architecture; an architecture imports this
module, `loss_terms`, `select`, `sparse` and its siblings, never `core` or `losses` (they are only named
for type checking). The package's ``__init__`` imports `architectures`, so every architecture is registered
before any SAE can be built. ``tests/sae/test_registry.py`` checks both directions on the import graph.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

from qwen_sae_jax.errors import UserError, did_you_mean

if TYPE_CHECKING:
    import jax

    from qwen_sae_jax.sae.core import SAE
    from qwen_sae_jax.sae.loss_terms import LossTerms

# (sae, x_in [B, d_in], implementation) -> z [B, d_sae]
EncodeFn = Callable[["SAE", "jax.Array", str], "jax.Array"]
# (sae, x_in [B, d_in], valid [B], dead_mask [d_sae] | None, implementation) -> (loss, LossTerms)
LossFn = Callable[["SAE", "jax.Array", "jax.Array", "jax.Array | None", str], tuple["jax.Array", "LossTerms"]]
# (sae, x_in [B, d_in], implementation) -> (acts [B, k], idx [B, k] int32)
SparseEncodeFn = Callable[["SAE", "jax.Array", str], tuple["jax.Array", "jax.Array"]]


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What the base code calls of one architecture (the contract is in `architectures/__init__.py`).

    ``x_in`` is already multiplied by ``act_scale`` and has its non-finite rows zeroed (``valid`` marks the others).
    """

    name: str
    encode: EncodeFn
    loss: LossFn
    encode_sparse: SparseEncodeFn | None = None
    """The sparse form of ``encode`` for architectures that select a fixed k per token (`SAE.encode_topk`)."""


_ARCHITECTURES: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    """Add ``architecture`` under its name (once: a second module claiming the same name is a bug)."""
    if architecture.name in _ARCHITECTURES:
        raise ValueError(f"SAE architecture {architecture.name!r} is registered twice")
    _ARCHITECTURES[architecture.name] = architecture
    return architecture


def architecture_names() -> tuple[str, ...]:
    """The registered architecture names, sorted."""
    return tuple(sorted(_ARCHITECTURES))


def get_architecture(name: str) -> Architecture:
    """The registered architecture ``name``; a `UserError` naming the valid ones otherwise."""
    if name not in _ARCHITECTURES:
        valid = architecture_names()
        raise UserError(f"unknown SAE architecture {name!r}{did_you_mean(str(name), valid)}; valid: {', '.join(valid)}")
    return _ARCHITECTURES[name]
