"""PyTorch-ecosystem SAE formats (SAELens v6, sparsify, Qwen-Scope) both ways, and `load_sae` with
format auto-detection. See docs/interop.md for each format's conventions.

    from qwen_sae_jax.interop import load_sae, load_saes, export_saes
    sae = load_sae("Qwen/SAE-Res-Qwen3.5-2B-Base-W32K-L0_100", layer=10)   # hub repo id: only that layer's file
"""
from qwen_sae_jax.interop.export import EXPORT_FORMATS, export_saes
from qwen_sae_jax.interop.load import FORMATS, detect_format, find_saes, load_sae, load_saes
from qwen_sae_jax.interop.releases import RELEASES, Release, find_release

__all__ = ["EXPORT_FORMATS", "FORMATS", "RELEASES", "Release", "detect_format", "export_saes", "find_release",
           "find_saes", "load_sae", "load_saes"]
