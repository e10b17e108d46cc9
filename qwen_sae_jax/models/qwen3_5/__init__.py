"""Qwen3.5 (hybrid Gated DeltaNet + gated attention) in flax.linen."""
