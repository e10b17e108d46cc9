"""qwen_sae_jax: sparse autoencoders on Qwen3 in JAX/Flax.

The public API is imported lazily so that ``import qwen_sae_jax`` stays cheap and has no side
effects (no JAX backend is initialised until a function is called).

    from qwen_sae_jax import load_model, SAEConfig, init_sae, save_sae, load_sae
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "load_model": "qwen_sae_jax.lm",
    "LanguageModel": "qwen_sae_jax.lm",
    "SAEConfig": "qwen_sae_jax.sae",
    "SAE": "qwen_sae_jax.sae",
    "init_sae": "qwen_sae_jax.sae",
    "save_sae": "qwen_sae_jax.sae",
    "load_sae": "qwen_sae_jax.interop",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'qwen_sae_jax' has no attribute {name!r}")
