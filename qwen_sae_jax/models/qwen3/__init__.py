"""Qwen3 / Qwen3-MoE in flax.linen: config, modules, HF checkpoint mapping, generation."""
from qwen_sae_jax.models.qwen3.config import Qwen3Config
from qwen_sae_jax.models.qwen3.modeling import Qwen3ForCausalLM, init_cache
from qwen_sae_jax.models.qwen3.params import load_hf, save_hf

__all__ = ["Qwen3Config", "Qwen3ForCausalLM", "init_cache", "load_hf", "save_hf"]
