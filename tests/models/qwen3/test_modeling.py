"""Flax Qwen3 forward pass against transformers' PyTorch model: float32 (max abs diff <= 1e-4), and
bfloat16 against transformers in torch.bfloat16 (2 bfloat16 ulps of the largest logit)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.models.qwen3 import Qwen3ForCausalLM, load_hf
from tests.models.qwen3.hf_reference import hf_logits

ATOL = 1e-4


def _ids(batch, length, vocab=128, seed=0):
    return np.random.RandomState(seed).randint(0, vocab, (batch, length)).astype(np.int32)


@pytest.mark.parametrize("overrides", [
    dict(tie_word_embeddings=False),
    dict(tie_word_embeddings=True),
    dict(head_dim=24, num_key_value_heads=1),   # head_dim != hidden/heads, single kv head (MQA)
    dict(num_key_value_heads=4, rope_theta=1e6),  # MHA, other rope base
    dict(attention_bias=True),
], ids=["untied", "tied", "hd24-kv1", "kv4-theta1e6", "bias"])
def test_logits_match_transformers(hf_tiny, overrides):
    hf_model, path = hf_tiny(**overrides)
    config, params = load_hf(path)
    ids = _ids(2, 9)
    got = Qwen3ForCausalLM(config).apply({"params": params}, jnp.asarray(ids))
    assert got.shape == (2, 9, 128)
    np.testing.assert_allclose(np.asarray(got), hf_logits(hf_model, ids), atol=ATOL, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_matches_transformers(hf_tiny, side):
    hf_model, path = hf_tiny()
    config, params = load_hf(path)
    ids = _ids(3, 8, seed=1)
    lengths = np.array([8, 5, 3])
    mask = np.zeros((3, 8), np.int32)
    for b, n in enumerate(lengths):
        if side == "left":
            mask[b, 8 - n:] = 1
        else:
            mask[b, :n] = 1
    position_ids = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int32)
    got = Qwen3ForCausalLM(config).apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask),
                                         jnp.asarray(position_ids))
    want = hf_logits(hf_model, ids, mask, position_ids)
    valid = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(got)[valid], want[valid], atol=ATOL, rtol=0)
    # the real tokens of a padded row equal the same row run alone without padding
    b = 1
    real = ids[b][valid[b]][None]
    alone = Qwen3ForCausalLM(config).apply({"params": params}, jnp.asarray(real))
    np.testing.assert_allclose(np.asarray(got)[b][valid[b]], np.asarray(alone)[0], atol=ATOL, rtol=0)


def test_num_layers_returns_residual_without_computing_upper_layers(hf_tiny):
    import torch

    hf_model, path = hf_tiny(num_hidden_layers=3)
    config, params = load_hf(path)
    ids = _ids(2, 6)
    model = Qwen3ForCausalLM(config)
    resid = model.apply({"params": params}, jnp.asarray(ids), num_layers=2)
    with torch.no_grad():
        hidden = hf_model(torch.tensor(ids), output_hidden_states=True).hidden_states
    np.testing.assert_allclose(np.asarray(resid), hidden[2].numpy(), atol=ATOL, rtol=0)
    # the truncated program contains only two layers' matmuls: count dot_generals in the jaxpr
    def dots(n):
        jaxpr = jax.make_jaxpr(lambda p, x: model.apply({"params": p}, x, num_layers=n))(params, ids)
        return str(jaxpr).count("dot_general")
    assert dots(1) < dots(2) < dots(3)
    full = str(jax.make_jaxpr(lambda p, x: model.apply({"params": p}, x))(params, ids)).count("dot_general")
    assert full == dots(3) + 1  # + the LM head


def _bf16_ulp(x):
    """Spacing of bfloat16 numbers (8 significant bits) at magnitude ``x``."""
    return 2.0 ** (np.floor(np.log2(x)) - 7)


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_bfloat16_logits_match_transformers_in_bfloat16(hf_tiny, moe):
    """bfloat16 parameters and compute against transformers run in torch.bfloat16 (eager attention, the same
    bfloat16 weights)."""
    import torch

    hf_model, path = hf_tiny(moe=moe)
    config, params = load_hf(path, param_dtype=jnp.bfloat16)  # the bfloat16 cast of the weights (test_params)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
    ids = _ids(2, 9, seed=2)
    logits = Qwen3ForCausalLM(config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16).apply({"params": params},
                                                                                          jnp.asarray(ids))
    assert logits.dtype == jnp.bfloat16
    hf_model.to(torch.bfloat16).set_attn_implementation("eager")
    with torch.no_grad():
        want = hf_model(input_ids=torch.tensor(ids)).logits
    assert want.dtype == torch.bfloat16
    got, want = np.asarray(logits.astype(jnp.float32)), want.float().numpy()
    # Tolerance: 2 bfloat16 ulps at the largest |logit| (~0.43 here: ulp 2**-9 ~ 0.002, so atol ~ 0.004, ~3.5% of
    # the logits' std ~0.11; the float32 comparison above is 1e-4). Each side rounds every logit to bfloat16 (half
    # an ulp each), and the rounding sequences upstream differ (XLA fuses chains of bfloat16 elementwise ops in
    # float32 where torch rounds after each op), which moves the hidden state by bfloat16 noise that the LM head
    # turns into an absolute error of the order of the largest logit's ulp, on small logits too. Measured here:
    # 1.25 ulps (dense), 1.5 (moe); <= 2 over 20 seeds / configs of up to 4 layers. Would fail: layer 0's q_norm
    # weight reset to ones (~7 ulps), the two decoder layers swapped (> 100 ulps). Not distinguished: a float32
    # forward on the same bfloat16 weights (1.25 / 1.5 ulps: bfloat16 output noise dominates), hence the dtype
    # asserts.
    atol = 2 * _bf16_ulp(np.abs(want).max())
    assert atol < 0.05 * want.std()
    np.testing.assert_allclose(got, want, atol=atol, rtol=0)


def test_fresh_init_has_the_tree_of_a_loaded_checkpoint(hf_tiny):
    _, path = hf_tiny()
    config, params = load_hf(path)
    model, ids = Qwen3ForCausalLM(config), jnp.asarray(_ids(1, 5))
    fresh = jax.eval_shape(lambda: model.init(jax.random.key(0), ids))["params"]  # shapes only: nothing computed
    assert jax.tree.structure(fresh) == jax.tree.structure(params)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), fresh) == jax.tree.map(lambda a: (a.shape, a.dtype), params)


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(norm_topk_prob=True, mlp_only_layers=[0], tie_word_embeddings=True),
    dict(decoder_sparse_step=2, num_key_value_heads=1),
], ids=["moe", "moe-normtopk-mlponly0-tied", "moe-sparsestep2-kv1"])
def test_moe_logits_match_transformers(hf_tiny, overrides):
    hf_model, path = hf_tiny(moe=True, **overrides)
    config, params = load_hf(path)
    assert config.is_moe
    ids = _ids(2, 9, seed=3)
    got = Qwen3ForCausalLM(config).apply({"params": params}, jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(got), hf_logits(hf_model, ids), atol=ATOL, rtol=0)


def test_moe_routing_uses_several_experts_and_matches_dense_reference(hf_tiny):
    """The ragged_dot dispatch equals a plain every-expert computation weighted by the router."""
    from qwen_sae_jax.models.qwen3.modeling import Qwen3MoeSparseMoeBlock

    _, path = hf_tiny(moe=True, norm_topk_prob=True)
    config, params = load_hf(path)
    mlp = params["model"]["layers_0"]["mlp"]
    x = jax.random.normal(jax.random.key(0), (2, 7, config.hidden_size))
    got = Qwen3MoeSparseMoeBlock(config).apply({"params": mlp}, x)

    probs = jax.nn.softmax(x @ mlp["gate"]["kernel"], axis=-1)  # [B, T, E]
    top_p, top_i = jax.lax.top_k(probs, config.num_experts_per_tok)
    assert len(np.unique(np.asarray(top_i))) > config.num_experts // 2
    weights = jnp.sum(jax.nn.one_hot(top_i, config.num_experts) * (top_p / top_p.sum(-1, keepdims=True))[..., None],
                      axis=-2)  # [B, T, E]
    e = mlp["experts"]
    h = jax.nn.silu(jnp.einsum("btd,edi->btei", x, e["gate_proj"])) * jnp.einsum("btd,edi->btei", x, e["up_proj"])
    want = jnp.einsum("btei,eid,bte->btd", h, e["down_proj"], weights)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_remat_layers_changes_nothing_but_memory(hf_tiny, moe):
    """Per-layer rematerialisation (``remat_layers=True``): same tree, logits and gradients, one checkpoint per
    decoder layer in the gradient."""
    from tests.models.remat_checks import assert_remat_layers_changes_nothing_but_memory

    _, path = hf_tiny(moe=moe)
    config, params = load_hf(path)
    mask = np.ones((2, 9), np.int32)
    mask[1, :3] = 0
    assert_remat_layers_changes_nothing_but_memory(Qwen3ForCausalLM, config, params, jnp.asarray(_ids(2, 9)),
                                                   jnp.asarray(mask))


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_weight_gradients_are_matrix_products(hf_tiny, moe):
    from tests.models.matmul_checks import assert_weight_gradients_are_matrix_products

    _, path = hf_tiny(moe=moe, tie_word_embeddings=True)
    config, params = load_hf(path)
    assert_weight_gradients_are_matrix_products(Qwen3ForCausalLM, config, params, jnp.asarray(_ids(2, 9)))
