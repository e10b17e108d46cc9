"""Training: config, plan (which SAEs), mesh and partition rules, the compiled step over every SAE, the loop,
orbax checkpoints, logging and multi-host set-up. Entry point: ``qwen_sae_jax.train.loop.train``."""
