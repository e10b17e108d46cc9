"""Qwen3Config.from_hf / to_hf: fields read from HF configs, unsupported fields rejected by name."""
import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.models.qwen3 import Qwen3Config

BASE = {"model_type": "qwen3", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "rope_theta": 5000.0, "rms_norm_eps": 1e-5, "eos_token_id": [3, 4]}


def test_fields_read_from_hf_dict_and_round_trip():
    c = Qwen3Config.from_hf(BASE)
    assert (c.rope_theta, c.rms_norm_eps, c.head_dim, c.eos_token_ids) == (5000.0, 1e-5, 16, (3, 4))
    assert Qwen3Config.from_hf(c.to_hf()) == c


def test_to_hf_is_loadable_by_transformers():
    import transformers

    c = Qwen3Config.from_hf({**BASE, "model_type": "qwen3_moe", "num_experts": 4, "num_experts_per_tok": 2,
                             "moe_intermediate_size": 8, "mlp_only_layers": [1], "norm_topk_prob": True})
    hf = transformers.AutoConfig.for_model(**c.to_hf())
    assert type(hf).__name__ == "Qwen3MoeConfig"
    assert (hf.num_experts, hf.mlp_only_layers, hf.rope_parameters["rope_theta"]) == (4, [1], 5000.0)
    assert [c.is_dense_mlp(i) for i in range(2)] == [False, True]


def test_hf_defaults_are_transformers_defaults():
    import transformers

    minimal = {"model_type": "qwen3", "vocab_size": 128, "hidden_size": 64, "intermediate_size": 64,
               "num_hidden_layers": 2, "num_attention_heads": 32}
    ours = Qwen3Config.from_hf(minimal)
    theirs = transformers.Qwen3Config(**{k: v for k, v in minimal.items() if k != "model_type"})
    assert ours.head_dim == theirs.head_dim
    assert ours.num_key_value_heads == theirs.num_key_value_heads
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]
    assert ours.rms_norm_eps == theirs.rms_norm_eps
    assert ours.tie_word_embeddings == theirs.tie_word_embeddings


@pytest.mark.parametrize("change,needle", [
    ({"use_sliding_window": True}, "use_sliding_window"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling.rope_type='yarn'"),
    ({"rope_parameters": {"rope_type": "linear", "rope_theta": 1.0}}, "rope_parameters.rope_type='linear'"),
    ({"model_type": "llama"}, "model_type='llama'"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"layer_types": ["full_attention", "sliding_attention"]}, "layer_types"),
    ({"num_key_value_heads": 3}, "num_key_value_heads=3"),
])
def test_unsupported_fields_raise_naming_the_field(change, needle):
    with pytest.raises(UserError, match=None) as err:
        Qwen3Config.from_hf({**BASE, **change})
    assert needle in str(err.value)


def test_missing_required_field_and_file(tmp_path):
    bad = dict(BASE)
    del bad["hidden_size"]
    with pytest.raises(UserError, match="hidden_size"):
        Qwen3Config.from_hf(bad)
    with pytest.raises(UserError, match="no config.json"):
        Qwen3Config.from_hf(tmp_path)
