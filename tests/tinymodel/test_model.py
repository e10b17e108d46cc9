"""Checks on the committed tiny model (qwen_sae_jax/assets/tiny-qwen3)."""
import json

import jax
import numpy as np
import pytest

from qwen_sae_jax.tinymodel import HELDOUT_SOURCES, TINY_MODEL_DIR, heldout_prompts
from qwen_sae_jax.tinymodel.quality import heldout_cross_entropy, heldout_stream, unigram_entropy

WINDOWS = 8        # held-out windows of 256 tokens per source used here (the quality script uses all of them)


@pytest.fixture(scope="module")
def flax_model():
    from qwen_sae_jax.models.qwen3 import Qwen3ForCausalLM, load_hf
    config, params = load_hf(TINY_MODEL_DIR)
    model = Qwen3ForCausalLM(config)
    fn = jax.jit(lambda p, ids: model.apply({"params": p}, ids))
    return config, lambda ids: np.asarray(fn(params, ids))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(TINY_MODEL_DIR)


def test_directory_is_a_small_hf_qwen3():
    files = {p.name for p in TINY_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "README.md"} <= files
    cfg = json.loads((TINY_MODEL_DIR / "config.json").read_text())
    assert cfg["model_type"] == "qwen3" and cfg["tie_word_embeddings"] is True
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]               # GQA
    size = sum(p.stat().st_size for p in TINY_MODEL_DIR.rglob("*") if p.is_file())
    assert size <= 25 * 2**20


def test_flax_matches_transformers(flax_model, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR, dtype=torch.float32).eval()
    tokens = heldout_stream(tokenizer, TINY_MODEL_DIR, "chat")
    ids = np.stack([tokens[:200], tokens[200:400]])
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    _, logits = flax_model
    assert np.abs(logits(ids) - ref).max() <= 1e-4


@pytest.mark.parametrize("source", HELDOUT_SOURCES)
def test_heldout_ce_below_unigram(flax_model, tokenizer, source):
    tokens = heldout_stream(tokenizer, TINY_MODEL_DIR, source)[: WINDOWS * 256 + 1]
    _, logits = flax_model
    model_ce = heldout_cross_entropy(logits, tokens, ctx_len=256)
    assert model_ce < unigram_entropy(tokens) - 0.5, (model_ce, unigram_entropy(tokens))


def test_load_model_tiny_and_chat_generation():
    from qwen_sae_jax import load_model
    from qwen_sae_jax.steer.refusal_matcher import is_refusal
    lm = load_model("tiny")
    assert lm.config.num_hidden_layers == json.loads((TINY_MODEL_DIR / "config.json").read_text())["num_hidden_layers"]
    harmful, harmless = heldout_prompts("harmful")[:4], heldout_prompts("harmless")[:4]
    out = lm.generate(harmful + harmless, max_new_tokens=24, chat=True)
    assert sum(map(is_refusal, out[:4])) >= 3 and sum(map(is_refusal, out[4:])) <= 1, out
