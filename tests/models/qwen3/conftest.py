"""Fixtures for the Qwen3 model tests."""
import pytest

from tests.models.qwen3.hf_reference import build_hf


@pytest.fixture
def hf_tiny(tmp_path):
    """Factory: hf_tiny(moe=False, **config overrides) -> (torch model, checkpoint dir)."""
    counter = iter(range(1000))
    return lambda **kw: build_hf(tmp_path, name=f"hf{next(counter)}", **kw)
