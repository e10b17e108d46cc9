"""Fixtures for the analysis tests: a tiny random Qwen3 with a byte-level tokenizer (built in the test, no
download), a random TopK SAE on one of its hooks, a run directory holding it, and a small corpus."""
import json

import pytest

from tests.train.tiny_checkpoint import build_checkpoint, corpus

HOOK = "layers.1"
D_SAE = 48


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("analysis-model") / "model")


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    from qwen_sae_jax.lm import load_model

    return load_model(tiny_model_dir)


def make_sae(tiny_lm, architecture="topk", hook=HOOK, d_sae=D_SAE, seed=0, **extra):
    import jax

    from qwen_sae_jax.sae import SAEConfig, init_sae

    k = {"k": 4} if architecture in ("topk", "batchtopk") else {}
    cfg = SAEConfig(architecture=architecture, d_in=tiny_lm.config.hidden_size, d_sae=d_sae, hook_name=hook,
                    model_name=tiny_lm.name, b_dec_init="zeros", **k, **extra)
    return init_sae(cfg, jax.random.key(seed))


@pytest.fixture(scope="session")
def tiny_sae(tiny_lm):
    return make_sae(tiny_lm)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("analysis-corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in corpus(24, seed=3)))
    return str(path)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, tiny_lm, tiny_sae, tiny_model_dir, corpus_file):
    """A run directory with config.yaml and two SAEs under saes/ (the layout `train` writes)."""
    from qwen_sae_jax.config import dump_yaml, load_config
    from qwen_sae_jax.sae import save_sae
    from qwen_sae_jax.train.config import TrainConfig

    run = tmp_path_factory.mktemp("analysis-run") / "run"
    cfg = load_config(TrainConfig, {"run_dir": str(run), "model": {"name": tiny_model_dir},
                                    "hooks": [HOOK, "layers.0.mlp"],
                                    "data": {"files": [corpus_file], "ctx_len": 32, "batch_size": 4}})
    (run / "saes").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_yaml(cfg))
    save_sae(tiny_sae, run / "saes" / f"{HOOK}__topk")
    save_sae(make_sae(tiny_lm, "relu", hook="layers.0.mlp", d_sae=32, seed=1), run / "saes" / "layers.0.mlp__relu")
    return run
