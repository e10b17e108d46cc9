import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.sae import SAEConfig


def test_expansion_factor_resolves_d_sae_and_roundtrips_through_dict():
    cfg = SAEConfig(architecture="topk", d_in=16, expansion_factor=4, k=3, hook_name="layers.1", model_name="tiny")
    assert cfg.d_sae == 64
    again = SAEConfig.from_dict(cfg.to_dict())
    assert again == cfg and hash(again) == hash(cfg)


def test_architecture_defaults():
    assert SAEConfig(architecture="topk", d_in=4, d_sae=8, k=2).decoder_unit_norm
    assert not SAEConfig(architecture="relu", d_in=4, d_sae=8).decoder_unit_norm
    assert SAEConfig(architecture="relu", d_in=4, d_sae=8).resolved_decoder_init_norm == 0.1
    assert SAEConfig(architecture="topk", d_in=64, d_sae=16, k=2).resolved_k_aux == 16  # d_in // 2 capped at d_sae


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(architecture="topk", d_in=8, d_sae=16, k=17), "k=17 exceeds d_sae=16"),
        (dict(architecture="topk", d_in=8, d_sae=16, k=0), "k must be an integer >= 1"),
        (dict(architecture="batchtopk", d_in=8, d_sae=16), "k is required"),
        (dict(architecture="relu", d_in=8, d_sae=16, k=4), "only used by topk/batchtopk"),
        (dict(architecture="topK", d_in=8, d_sae=16, k=4), "did you mean 'topk'"),
        (dict(architecture="topk", d_in=8, k=4), "needs d_sae or expansion_factor"),
        (dict(architecture="topk", d_in=8, d_sae=10, expansion_factor=2, k=4), "disagrees"),
        (dict(architecture="relu", d_in=0, d_sae=16), "d_in must be a positive integer"),
        (dict(architecture="relu", d_in=8, d_sae=16, dtype="float16"), "valid: float32, bfloat16"),
        (dict(architecture="jumprelu", d_in=8, d_sae=16, jumprelu_bandwidth=0.0), "bandwidth must be > 0"),
        (dict(architecture="relu", d_in=8, d_sae=16, normalize_activations="yes"), "true, false or null"),
    ],
)
def test_bad_configs_raise_one_clear_error(kwargs, message):
    with pytest.raises(UserError, match=message):
        SAEConfig(**kwargs)


def test_unknown_field_in_dict_suggests_the_closest():
    with pytest.raises(UserError, match="did you mean 'd_sae'"):
        SAEConfig.from_dict({"architecture": "relu", "d_in": 4, "d_sea": 8})
