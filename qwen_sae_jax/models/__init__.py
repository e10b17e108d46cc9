"""Language models implemented in Flax (Qwen3 and Qwen3.5, dense and MoE; see registry.py)."""
