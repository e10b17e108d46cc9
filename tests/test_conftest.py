"""The test-wide setup itself: a user's own XLA_FLAGS must not turn the 8-device tests into 1-device ones."""
import jax
import pytest

from tests.conftest import with_device_count


def test_device_count_flag_is_appended_or_replaced():
    assert with_device_count("") == "--xla_force_host_platform_device_count=8"
    assert with_device_count("--xla_dump_to=/tmp/x --xla_cpu_enable_fast_math=false") == (
        "--xla_dump_to=/tmp/x --xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=8")
    assert with_device_count("--xla_force_host_platform_device_count=1 --xla_dump_to=d", 2) == (
        "--xla_dump_to=d --xla_force_host_platform_device_count=2")


def test_this_session_has_eight_cpu_devices():
    if jax.default_backend() != "cpu":
        pytest.skip(f"JAX_PLATFORMS={jax.default_backend()}: the forced device count applies to the CPU backend")
    assert jax.device_count() == 8
