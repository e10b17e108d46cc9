"""A tiny random transformers Qwen3 checkpoint (hidden 32, 2 layers), built once per test module."""
import numpy as np
import pytest
import torch

VOCAB, HIDDEN = 96, 32


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    """(torch model, checkpoint dir) of a random 2-layer Qwen3."""
    import transformers

    torch.manual_seed(0)
    config = transformers.Qwen3Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      head_dim=8, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    model = transformers.Qwen3ForCausalLM(config)
    with torch.no_grad():   # larger weights than the init so that ablations change the loss clearly
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):
                p.mul_(8.0)
            if name.endswith(("embed_tokens.weight", "lm_head.weight")):
                p.mul_(40.0)
    model.eval()
    out = tmp_path_factory.mktemp("hf") / "tiny"
    model.save_pretrained(out)
    return model, str(out)


@pytest.fixture(scope="module")
def tiny_lm(tiny_hf):
    from qwen_sae_jax.lm import load_model

    return load_model(tiny_hf[1])


def token_batches(n=2, batch=3, seq=12, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, VOCAB, size=(batch, seq)).astype(np.int32) for _ in range(n)]
