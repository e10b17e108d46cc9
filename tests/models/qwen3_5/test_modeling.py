"""Flax Qwen3.5 forward against transformers' torch fallbacks (float32, <= 1e-4 of the reference's scale)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from qwen_sae_jax.models.qwen3_5.modeling import Qwen3_5ForCausalLM
from qwen_sae_jax.models.qwen3_5.params import load_hf
from tests.models.qwen3_5.hf_reference import assert_close, hf_logits


def _ids(batch, length, seed=0):
    return np.random.RandomState(seed).randint(0, 128, (batch, length)).astype(np.int32)


def _forward(path, ids, mask=None, positions=None):
    config, params = load_hf(path)
    a = lambda x: None if x is None else jnp.asarray(x)  # noqa: E731
    return np.asarray(Qwen3_5ForCausalLM(config).apply({"params": params}, a(ids), a(mask), a(positions)))


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(tie_word_embeddings=True),
    dict(num_hidden_layers=4, full_attention_interval=2),  # lin full lin full, layer_types derived
    dict(layer_types=["full_attention", "linear_attention", "linear_attention"], num_hidden_layers=3),
    dict(linear_num_key_heads=4, linear_value_head_dim=8, num_key_value_heads=1),  # delta GQA 1, dk == dv, MQA
    dict(linear_num_key_heads=1, linear_num_value_heads=3, linear_key_head_dim=16, partial_rotary_factor=0.5),
    dict(moe=True),
    dict(moe=True, tie_word_embeddings=True, num_experts=6, num_experts_per_tok=3),
], ids=["dense", "tied", "interval2", "full-first", "gqa1-dk=dv-kv1", "gqa3-rot0.5", "moe", "moe-tied-e6k3"])
def test_logits_match_transformers(hf35, overrides):
    hf_model, path = hf35(**overrides)
    ids = _ids(2, 11)
    got = _forward(path, ids)
    assert got.shape == (2, 11, 128)
    assert_close(got, hf_logits(hf_model, ids))


@pytest.mark.parametrize("length", [1, 63, 64, 65, 130])
def test_one_and_several_chunks(hf35, length):
    hf_model, path = hf35(seed=length)
    ids = _ids(1, length, seed=length)
    assert_close(_forward(path, ids), hf_logits(hf_model, ids), where=f"T={length}")


@pytest.mark.slow
@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_left_padded_batch_with_mask(hf35, moe):
    hf_model, path = hf35(moe=moe, seed=3)
    ids = _ids(3, 70, seed=1)
    lengths = [70, 66, 9]
    mask = np.zeros_like(ids)
    for b, n in enumerate(lengths):
        mask[b, 70 - n:] = 1
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int32)
    got = _forward(path, ids, mask, positions)
    want = hf_logits(hf_model, ids, mask, positions)
    valid = mask.astype(bool)
    assert_close(got[valid], want[valid])
    for b in (1, 2):  # each padded row equals the row alone: pads leave the recurrent state at zero
        assert_close(got[b][valid[b]], _forward(path, ids[b][valid[b]][None])[0], rtol=1e-5, where=f"row {b}")


def test_truncated_forward_equals_hidden_states_and_skips_layers(hf35):
    hf_model, path = hf35(num_hidden_layers=4, full_attention_interval=2)
    config, params = load_hf(path)
    model = Qwen3_5ForCausalLM(config)
    ids = _ids(2, 9)
    with torch.no_grad():
        hidden = hf_model(torch.tensor(ids), output_hidden_states=True).hidden_states
    for n in (1, 2, 3):
        resid = model.apply({"params": params}, jnp.asarray(ids), num_layers=n)
        assert_close(resid, hidden[n].numpy(), where=f"num_layers={n}")

    def dots(n):
        jaxpr = jax.make_jaxpr(lambda p, x: model.apply({"params": p}, x, num_layers=n))(params, ids)
        return str(jaxpr).count("dot_general")
    assert dots(1) < dots(2) < dots(3)


@pytest.mark.slow
def test_init_matches_checkpoint_tree_and_bf16_policy(hf35):
    from qwen_sae_jax.models.qwen3_5.params import init_params

    _, path = hf35(moe=True)
    config, params = load_hf(path)
    fresh = init_params(config, seed=0)
    assert jax.tree.structure(fresh) == jax.tree.structure(params)
    layer0 = fresh["model"]["layers_0"]
    assert float(jnp.abs(layer0["input_layernorm"]["weight"]).max()) == 0.0  # zero-centred: (1 + 0)
    assert float(jnp.abs(layer0["linear_attn"]["norm"]["weight"] - 1).max()) == 0.0  # gated norm: weight 1
    config_bf, params_bf = load_hf(path, param_dtype=jnp.bfloat16)
    ids = jnp.asarray(_ids(1, 6))
    logits = Qwen3_5ForCausalLM(config_bf, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16).apply(
        {"params": params_bf}, ids)
    assert logits.dtype == jnp.bfloat16
    ref = Qwen3_5ForCausalLM(config).apply({"params": params}, ids)
    assert_close(logits.astype(jnp.float32), ref, rtol=0.05)


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_remat_layers_changes_nothing_but_memory(hf35, moe):
    """Per-layer rematerialisation of the hybrid model (a Gated DeltaNet and a full-attention layer; left padding):
    same tree, logits and gradients, one checkpoint per decoder layer in the gradient."""
    from tests.models.remat_checks import assert_remat_layers_changes_nothing_but_memory

    _, path = hf35(moe=moe)
    config, params = load_hf(path)
    assert set(config.layer_types) == {"linear_attention", "full_attention"}
    mask = np.ones((2, 70), np.int32)   # 70 tokens: more than one delta-rule chunk
    mask[1, :5] = 0
    assert_remat_layers_changes_nothing_but_memory(Qwen3_5ForCausalLM, config, params, jnp.asarray(_ids(2, 70)),
                                                   jnp.asarray(mask))


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_weight_gradients_are_matrix_products(hf35, moe):
    from tests.models.matmul_checks import assert_weight_gradients_are_matrix_products

    _, path = hf35(moe=moe, tie_word_embeddings=True)
    config, params = load_hf(path)
    assert_weight_gradients_are_matrix_products(Qwen3_5ForCausalLM, config, params, jnp.asarray(_ids(2, 9)))
