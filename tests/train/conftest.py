"""Fixtures for the training tests: a tiny random Qwen3 (2 layers, d_model 64) with a tokenizer, a corpus,
and a small TrainConfig factory. Compiled programs are shared through a session-wide persistent cache
(each train() run builds fresh jitted functions whose HLO repeats across runs)."""
import pytest

from tests.train.tiny_checkpoint import build_checkpoint, corpus, write_jsonl


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
    import jax
    cache = tmp_path_factory.mktemp("jax-cache")
    old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs,
           jax.config.jax_persistent_cache_min_entry_size_bytes)
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield str(cache)
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", old[2])


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Directory of a random 2-layer, d_model-64 HF Qwen3 with a byte-level tokenizer."""
    return build_checkpoint(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", corpus(240))


@pytest.fixture
def make_config(tiny_model, tiny_corpus, tmp_path):
    """make_config(*overrides, run="run") -> TrainConfig for a short run on the tiny model."""
    from qwen_sae_jax.config import load_config
    from qwen_sae_jax.train.config import TrainConfig

    def make(*overrides, run="run"):
        base = {
            "run_dir": str(tmp_path / run), "model": {"name": tiny_model},
            "hooks": ["layers.1", "layers.0.mlp"],
            "saes": [{"name": "topk", "architecture": "topk", "k": 8, "d_sae": 128, "dead_tokens_threshold": 2048,
                      "optim": {"lr": 3e-3, "warmup_steps": 4, "decay": "cosine"}}],
            "data": {"files": [tiny_corpus], "ctx_len": 32, "batch_size": 8},
            "buffer": {"size": 1024, "init_sample": 256},
            "train": {"total_tokens": 128 * 24, "batch_size": 128},
            "eval": {"holdout_every": 10, "tokens": 256},
            "checkpoint": {"every": 8, "async_save": False}, "log": {"every": 4, "progress": "lines"},
        }
        return load_config(TrainConfig, base, list(overrides))
    return make
