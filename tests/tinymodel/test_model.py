"""Checks on the committed embedded models: ``tiny`` (qwen_sae_jax/assets/tiny-qwen3) and ``tiny-qwen3.5``
(qwen_sae_jax/assets/tiny-qwen3.5, the hybrid Gated DeltaNet + gated attention Qwen3.5)."""
import json
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.lm import EMBEDDED_MODELS
from qwen_sae_jax.tinymodel import HELDOUT_SOURCES, TINY_MODEL_DIR, heldout_prompts
from qwen_sae_jax.tinymodel.quality import (
    HARMFUL_BAR,
    HARMLESS_BAR,
    PARITY_BAR,
    heldout_cross_entropy,
    heldout_stream,
    unigram_entropy,
)

WINDOWS = 8        # held-out windows of 256 tokens per source used here (the quality script uses all of them)
MODEL_TYPES = {"tiny": "qwen3", "tiny-qwen3.5": "qwen3_5_text"}
HYBRID_DIR = Path(EMBEDDED_MODELS["tiny-qwen3.5"])


@pytest.fixture(scope="module", params=list(MODEL_TYPES))
def name(request):
    return request.param


@pytest.fixture(scope="module")
def model_dir(name):
    return Path(EMBEDDED_MODELS[name])


@pytest.fixture(scope="module")
def flax_model(model_dir):
    from qwen_sae_jax.models import registry
    config, params = registry.load_hf(model_dir)
    model = registry.causal_lm(config, jnp.float32, jnp.float32)
    fn = jax.jit(lambda p, ids: model.apply({"params": p}, ids))
    return config, lambda ids: np.asarray(fn(params, ids))


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(model_dir)


def test_directory_is_a_small_hf_model(name, model_dir):
    files = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "README.md", "quality.json", "heldout"} <= files
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["model_type"] == MODEL_TYPES[name] and cfg["tie_word_embeddings"] is True
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]               # GQA
    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    assert size <= 25 * 2**20


def test_hybrid_shares_tiny_tokenizer_and_heldout_data():
    """Same tokenizer, chat template and held-out splits as tiny: the files are byte-identical."""
    shared = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    shared += [f"heldout/{p.name}" for p in sorted((TINY_MODEL_DIR / "heldout").iterdir())]
    assert len(shared) == 3 + len(HELDOUT_SOURCES) + 2
    for rel in shared:
        assert (HYBRID_DIR / rel).read_bytes() == (TINY_MODEL_DIR / rel).read_bytes(), rel


def test_hybrid_has_both_layer_kinds_at_least_twice():
    from qwen_sae_jax import load_model
    lm = load_model("tiny-qwen3.5")
    kinds = Counter(lm.config.layer_types)
    assert kinds["linear_attention"] >= 2 and kinds["full_attention"] >= 2, kinds
    linear = lm.config.layer_types.index("linear_attention")
    full = lm.config.layer_types.index("full_attention")
    hooks = [f"layers.{linear}.linear_attn", f"layers.{full}.self_attn"]
    assert set(hooks) <= set(lm.hook_names)
    ids = np.asarray([lm.tokenizer("def add(a, b):\n    return a + b")["input_ids"]], np.int32)
    acts = lm.capture(ids, hooks)
    for h in hooks:
        assert acts[h].shape == ids.shape + (lm.config.hidden_size,) and np.isfinite(np.asarray(acts[h])).all()


def test_flax_matches_transformers(model_dir, flax_model, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokens = heldout_stream(tokenizer, model_dir, "chat")
    ids = np.stack([tokens[:200], tokens[200:400]])
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    _, logits = flax_model
    assert np.abs(logits(ids) - ref).max() <= PARITY_BAR


@pytest.mark.parametrize("source", HELDOUT_SOURCES)
def test_heldout_ce_below_unigram(model_dir, flax_model, tokenizer, source):
    tokens = heldout_stream(tokenizer, model_dir, source)[: WINDOWS * 256 + 1]
    _, logits = flax_model
    model_ce = heldout_cross_entropy(logits, tokens, ctx_len=256)
    assert model_ce < unigram_entropy(tokens) - 0.5, (model_ce, unigram_entropy(tokens))


def test_quality_json_records_the_bars(model_dir):
    """The recorded measurements meet the parity and cross-entropy bars, and the summary's verdicts agree with
    its own numbers."""
    report = json.loads((model_dir / "quality.json").read_text())
    s = report["summary"]
    assert s["parity_ok"] and s["parity_max_abs_diff"] <= PARITY_BAR
    assert all(v["model_ce"] < v["unigram_ce"] for v in report["heldout"].values())
    assert set(report["heldout"]) == set(HELDOUT_SOURCES)
    primary = report["refusal"][s["refusal_generator"]]
    assert primary["n_harmful"] == len(heldout_prompts("harmful")) == 150
    assert primary["n_harmless"] == len(heldout_prompts("harmless")) == 150
    assert (s["harmful_refusal_rate"], s["harmless_refusal_rate"]) == (primary["harmful_refusal_rate"],
                                                                       primary["harmless_refusal_rate"])
    met = s["harmful_refusal_rate"] >= HARMFUL_BAR and s["harmless_refusal_rate"] <= HARMLESS_BAR
    assert s["refusal_bars_met"] == met
    config = json.loads((model_dir / "config.json").read_text())           # measured on this very model
    assert all(report["config"][k] == config[k] for k in ("model_type", "num_hidden_layers", "hidden_size"))


@pytest.mark.parametrize("model", ["tiny", "tiny-qwen3.5"])
def test_recorded_refusal_rates_meet_the_bars(model):
    s = json.loads((Path(EMBEDDED_MODELS[model]) / "quality.json").read_text())["summary"]
    assert s["harmful_refusal_rate"] >= HARMFUL_BAR and s["harmless_refusal_rate"] <= HARMLESS_BAR, s


def test_load_model_and_chat_generation_as_recorded(name, model_dir):
    """``load_model(name)`` generates greedily what quality.json recorded for its first prompts (judged alike)."""
    from qwen_sae_jax import load_model
    from qwen_sae_jax.steer.refusal_matcher import is_refusal
    lm = load_model(name)
    assert lm.config.num_hidden_layers == json.loads((model_dir / "config.json").read_text())["num_hidden_layers"]
    report = json.loads((model_dir / "quality.json").read_text())
    recorded = report["refusal"]["project_lm_generate"]["examples"]
    prompts = [ex["prompt"] for kind in ("harmful", "harmless") for ex in recorded[kind][:4]]
    expected = [is_refusal(ex["response"]) for kind in ("harmful", "harmless") for ex in recorded[kind][:4]]
    out = lm.generate(prompts, max_new_tokens=report["max_new_tokens"], chat=True)
    assert [is_refusal(t) for t in out] == expected, list(zip(prompts, out))
