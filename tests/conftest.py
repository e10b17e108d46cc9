"""Test-wide setup: 8 forced CPU devices (for sharding tests), float32 matmuls at full precision, and one JAX
persistent compilation cache for the whole run (the many tests that build the same tiny model compile each
program once; subprocesses, e.g. the two-process training tests, inherit it through the environment)."""
import atexit
import os
import shutil
import tempfile


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
# a fresh directory per run unless the user names one: nothing from an earlier run (or another checkout) is reused
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="qwen-sae-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
