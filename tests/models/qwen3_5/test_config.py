"""Qwen3_5Config.from_hf / to_hf: both config forms, transformers' defaults, bad values rejected by name."""
import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.models import registry
from qwen_sae_jax.models.qwen3_5.config import Qwen3_5Config
from tests.models.qwen3_5.hf_reference import text_config


def test_text_config_round_trip_and_transformers_reads_to_hf():
    import transformers

    for moe in (False, True):
        hf = text_config(moe, eos_token_id=[3, 4], rope_theta=1e7).to_dict()
        c = Qwen3_5Config.from_hf(hf)
        assert c.is_moe == moe and c.eos_token_ids == (3, 4) and c.rope_theta == 1e7 and c.rotary_dim == 8
        assert c.mixers == ("linear_attn", "self_attn")
        assert Qwen3_5Config.from_hf(c.to_hf()) == c
        theirs = transformers.AutoConfig.for_model(**c.to_hf())
        assert theirs.model_type == c.model_type and theirs.layer_types == list(c.layer_types)
        assert theirs.rope_parameters["partial_rotary_factor"] == 0.25


def test_conditional_generation_config_reads_its_text_config():
    import transformers

    text = text_config(tie_word_embeddings=False).to_dict()
    outer = transformers.Qwen3_5Config(text_config=text, tie_word_embeddings=True).to_dict()
    c = Qwen3_5Config.from_hf(outer)
    assert c == Qwen3_5Config.from_hf(text).replace(tie_word_embeddings=True)  # the top level decides tying
    moe_outer = transformers.Qwen3_5MoeConfig(text_config=text_config(moe=True).to_dict()).to_dict()
    assert Qwen3_5Config.from_hf(moe_outer).is_moe
    with pytest.raises(UserError, match="text_config.model_type='qwen3_5_moe_text' does not match"):
        Qwen3_5Config.from_hf({**outer, "text_config": text_config(moe=True).to_dict()})
    with pytest.raises(UserError, match="lacks its text_config"):
        Qwen3_5Config.from_hf({"model_type": "qwen3_5"})


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_defaults_and_layer_pattern_are_transformers(moe):
    import transformers

    minimal = {"vocab_size": 128, "hidden_size": 64, "num_hidden_layers": 9, "num_attention_heads": 4}
    if not moe:
        minimal["intermediate_size"] = 96
    cls = transformers.Qwen3_5MoeTextConfig if moe else transformers.Qwen3_5TextConfig
    for extra in ({}, {"full_attention_interval": 3}):
        theirs = cls(**minimal, **extra)
        ours = Qwen3_5Config.from_hf({"model_type": theirs.model_type, **minimal, **extra})
        assert list(ours.layer_types) == theirs.layer_types
        for name in ("num_key_value_heads", "head_dim", "rms_norm_eps", "linear_conv_kernel_dim", "linear_key_head_dim",
                     "linear_value_head_dim", "linear_num_key_heads", "linear_num_value_heads",
                     "tie_word_embeddings", "max_position_embeddings") + (
                ("num_experts", "num_experts_per_tok", "moe_intermediate_size", "shared_expert_intermediate_size")
                if moe else ()):
            assert getattr(ours, name) == getattr(theirs, name), name
        assert ours.rope_theta == theirs.rope_parameters["rope_theta"]
        assert ours.partial_rotary_factor == theirs.rope_parameters["partial_rotary_factor"]


@pytest.mark.parametrize("change,needle", [
    ({"layer_types": ["linear_attention", "sliding_attention"]},
     "layer_types contains ['sliding_attention']; valid: linear_attention, full_attention"),
    ({"layer_types": ["full_attention"]}, "layer_types has 1 entries for num_hidden_layers=2"),
    ({"num_key_value_heads": 3}, "num_attention_heads=4 must be a multiple of num_key_value_heads=3"),
    ({"linear_num_key_heads": 3}, "linear_num_value_heads=4 must be a multiple of linear_num_key_heads=3"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "rope_parameters.rope_type='yarn'"),
    ({"rope_parameters": {"partial_rotary_factor": 0.01}}, "partial_rotary_factor=0.01"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"attention_bias": True}, "attention_bias"),
    ({"model_type": "qwen3_next"}, "model_type='qwen3_next'"),
])
def test_bad_values_raise_naming_the_field(change, needle):
    hf = {**text_config().to_dict(), **change}
    with pytest.raises(UserError) as err:
        Qwen3_5Config.from_hf(hf)
    assert needle in str(err.value)


def test_registry_dispatches_on_model_type(tmp_path):
    from qwen_sae_jax.models.qwen3.config import Qwen3Config

    assert set(registry.MODEL_TYPES) == {"qwen3", "qwen3_moe", "qwen3_5", "qwen3_5_text", "qwen3_5_moe",
                                         "qwen3_5_moe_text"}
    assert isinstance(registry.read_config(text_config().to_dict()), Qwen3_5Config)
    qwen3 = {"model_type": "qwen3", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
             "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}
    assert isinstance(registry.read_config(qwen3), Qwen3Config)
    with pytest.raises(UserError, match="model_type='llama' is not supported; valid: qwen3, qwen3_moe, qwen3_5"):
        registry.read_config({"model_type": "llama"})
    missing = dict(text_config().to_dict())
    del missing["hidden_size"]
    with pytest.raises(UserError, match="lacks required field"):
        registry.read_config(missing)
