"""SAE evaluation: activation-level reconstruction metrics, model-level splicing (CE / KL), tables, plots."""
