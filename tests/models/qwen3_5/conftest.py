"""Fixtures for the Qwen3.5 model tests."""
import pytest

from tests.models.qwen3_5.hf_reference import build_hf


@pytest.fixture
def hf35(tmp_path):
    """Factory: hf35(moe=False, seed=0, **config overrides) -> (torch reference model, checkpoint dir)."""
    counter = iter(range(1000))
    return lambda **kw: build_hf(tmp_path, name=f"hf{next(counter)}", **kw)
