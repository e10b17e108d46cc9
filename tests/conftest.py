"""Test-wide setup: 8 forced CPU devices (for sharding tests), float32 matmuls at full precision."""
import os


def with_device_count(flags: str, n: int = 8) -> str:
    """``flags`` (a user's own XLA_FLAGS) with the forced host device count set to ``n``: appended, or replacing
    a count already there, so no user setting silently turns the 8-device tests into 1-device ones."""
    kept = [f for f in flags.split() if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join(kept + [f"--xla_force_host_platform_device_count={n}"])


os.environ["XLA_FLAGS"] = with_device_count(os.environ.get("XLA_FLAGS", ""))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
