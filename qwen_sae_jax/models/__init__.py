"""Language models implemented in Flax (currently Qwen3 dense and MoE)."""
