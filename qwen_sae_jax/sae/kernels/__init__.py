"""Pallas kernels for the SAE core (fused encoder + TopK)."""
