"""A tiny random Qwen3 (2 layers, hidden 32) with the embedded model's tokenizer, and tiny random SAEs."""
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

HIDDEN, D_SAE = 32, 64
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A random 2-layer Qwen3 checkpoint with the tiny model's tokenizer (vocab 4096, ChatML template)."""
    return build_tiny(tmp_path_factory.mktemp("steer") / "tiny")


def build_tiny(out: Path) -> str:
    import transformers

    from qwen_sae_jax.lm import TINY_DIR

    torch.manual_seed(0)
    config = transformers.Qwen3Config(vocab_size=4096, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                      max_position_embeddings=256, eos_token_id=4093, pad_token_id=4091,
                                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    model = transformers.Qwen3ForCausalLM(config)
    with torch.no_grad():  # larger weights than the init so that interventions visibly change the output
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):
                p.mul_(4.0)
            if name.endswith(("embed_tokens.weight", "lm_head.weight")):
                p.mul_(20.0)
    model.eval()
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(Path(TINY_DIR) / name, out / name)
    return str(out)


@pytest.fixture(scope="session")
def lm(tiny_dir):
    from qwen_sae_jax.lm import load_model

    return load_model(tiny_dir)


def random_sae(hook: str, seed: int = 0, architecture: str = "topk", act_scale: float = 0.5):
    """A random SAE at ``hook`` with a non-trivial b_dec, b_enc and act_scale (so unit conversions matter) and
    encoder columns of norm 1."""
    from qwen_sae_jax.sae import SAEConfig, init_sae

    k = 8 if architecture == "topk" else None
    # encoder at the decoder's scale (not the training init's 0.1): encoded latents move visibly with the input
    cfg = SAEConfig(architecture=architecture, d_in=HIDDEN, d_sae=D_SAE, k=k, hook_name=hook, model_name="tiny-test",
                    encoder_init_norm=1.0)
    key = jax.random.key(seed)
    sae = init_sae(cfg, key)
    k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
    return sae.replace(b_dec=0.1 * jax.random.normal(k1, (HIDDEN,)),
                       b_enc=0.05 * jax.random.normal(k2, (D_SAE,)), act_scale=jnp.float32(act_scale))


@pytest.fixture(scope="session")
def saes():
    return {"layers.0": random_sae("layers.0", 0), "layers.1.mlp": random_sae("layers.1.mlp", 1, "relu")}


def random_tokens(batch=2, seq=12, seed=0, high=4000):
    rng = np.random.default_rng(seed)
    return rng.integers(0, high, size=(batch, seq)).astype(np.int32)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A run directory with SAEs at layers.0 and layers.1 (the layout `qwen-sae train` writes)."""
    from qwen_sae_jax.sae import save_sae

    root = tmp_path_factory.mktemp("run")
    for i, hook in enumerate(["layers.0", "layers.1"]):
        save_sae(random_sae(hook, seed=i), root / "saes" / f"{hook}__topk-k8")
    return root
