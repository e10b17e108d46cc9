"""Hook names, aliases, globs, and the intercept_methods-based interceptor on a random tiny model."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax import hooks
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.models.qwen3 import Qwen3Config, Qwen3ForCausalLM
from qwen_sae_jax.models.qwen3.params import init_params


def test_names_aliases_and_depth():
    names = hooks.hook_names(2)
    assert names == ["layers.0.input", "layers.0.self_attn", "layers.0.mlp", "layers.0",
                     "layers.1.input", "layers.1.self_attn", "layers.1.mlp", "layers.1"]
    assert [hooks.alias_of(n) for n in names[:4]] == ["blocks.0.hook_resid_pre", "blocks.0.hook_attn_out",
                                                      "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"]
    assert [hooks.layers_needed(n)
            for n in ("layers.3.input", "layers.3.self_attn", "layers.3", "blocks.0.hook_resid_pre")] == [3, 4, 4, 0]


def test_resolve_globs_aliases_order_and_dedupe():
    assert hooks.resolve_hooks(["layers.1", "blocks.0.hook_mlp_out", "layers.[0-1]"], 4) == \
        ["layers.0.mlp", "layers.0", "layers.1"]
    assert hooks.resolve_hooks("blocks.*.hook_resid_post", 3) == ["layers.0", "layers.1", "layers.2"]
    assert hooks.resolve_hooks("layers.*.mlp", 2) == ["layers.0.mlp", "layers.1.mlp"]


def test_unknown_names_raise_one_error_listing_valid_names():
    with pytest.raises(UserError) as err:
        hooks.resolve_hooks(["layers.0.attn", "blocks.5.hook_resid_post", "layers.1"], 2)
    msg = str(err.value)
    assert "'layers.0.attn'" in msg and "'blocks.5.hook_resid_post'" in msg and "'layers.1'" not in msg
    assert "valid hook names" in msg and "0..1" in msg
    with pytest.raises(UserError, match="not a hook name"):
        hooks.layers_needed("resid")


def test_hybrid_model_names_each_layers_mixer():
    mixers = ("linear_attn", "linear_attn", "self_attn")
    assert hooks.hook_names(mixers)[:4] == ["layers.0.input", "layers.0.linear_attn", "layers.0.mlp", "layers.0"]
    assert hooks.alias_of("layers.0.linear_attn") == "blocks.0.hook_attn_out"
    assert hooks.resolve_hooks("blocks.*.hook_attn_out", mixers) == ["layers.0.linear_attn", "layers.1.linear_attn",
                                                                     "layers.2.self_attn"]
    assert hooks.resolve_hooks(["layers.2.*"], mixers) == ["layers.2.input", "layers.2.self_attn", "layers.2.mlp"]
    assert hooks.layers_needed("layers.1.linear_attn") == 2
    assert hooks.hook_names(2) == hooks.hook_names(("self_attn", "self_attn"))
    with pytest.raises(UserError, match=r"layer 2 is a full-attention layer: its mixer is layers.2.self_attn"):
        hooks.resolve_hooks("layers.2.linear_attn", mixers)
    with pytest.raises(UserError, match=r"full-attention layers N in \{2\}"):
        hooks.resolve_hooks("layers.0.attn", mixers)


def _tiny():
    config = Qwen3Config.from_hf({"model_type": "qwen3", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
                                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                                  "head_dim": 8})
    return config, Qwen3ForCausalLM(config), init_params(config, seed=1)


def test_interceptor_captures_inside_jit_without_model_changes():
    config, model, params = _tiny()
    ids = jnp.asarray(np.random.RandomState(0).randint(0, 64, (2, 5)))

    @jax.jit
    def run(p, x):
        h = hooks.HookInterceptor(hooks.hook_names(2))
        logits = h.run(model.apply, {"params": p}, x)
        return logits, h.captured

    logits, acts = run(params, ids)
    assert set(acts) == set(hooks.hook_names(2))
    # the residual bookkeeping holds: output = input + attn + mlp, and layer 0's output feeds layer 1
    for i in range(2):
        np.testing.assert_allclose(acts[f"layers.{i}"], acts[f"layers.{i}.input"] + acts[f"layers.{i}.self_attn"]
                                   + acts[f"layers.{i}.mlp"], atol=1e-5)
    np.testing.assert_array_equal(acts["layers.0"], acts["layers.1.input"])
    np.testing.assert_allclose(logits, model.apply({"params": params}, ids), atol=1e-5, rtol=0)
    # flax's own capture_intermediates sees the same decoder-layer output
    _, state = model.apply({"params": params}, ids, capture_intermediates=True, mutable=["intermediates"])
    np.testing.assert_allclose(state["intermediates"]["model"]["layers_1"]["__call__"][0], acts["layers.1"], atol=1e-6)


def test_interceptor_intervention_changes_downstream_only():
    config, model, params = _tiny()
    ids = jnp.asarray(np.random.RandomState(1).randint(0, 64, (1, 4)))
    h = hooks.HookInterceptor(["layers.0.mlp", "layers.1.input"], {"layers.0.mlp": lambda a: a * 0 + 1.0})
    h.run(model.apply, {"params": params}, ids)
    np.testing.assert_array_equal(h.captured["layers.0.mlp"], np.ones((1, 4, 32)))
    plain = hooks.HookInterceptor(["layers.0.mlp", "layers.0.self_attn", "layers.0.input"])
    plain.run(model.apply, {"params": params}, ids)
    want = plain.captured["layers.0.input"] + plain.captured["layers.0.self_attn"] + 1.0
    np.testing.assert_allclose(h.captured["layers.1.input"], want, atol=1e-6)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_interceptor_passes_everything_else_through_untouched(tied):
    """Methods other than __call__ (Qwen3Model.run_layers / attend, the tied head's Embed.attend) and modules that
    are not hook points (embedding, norms, projections, LM head) pass through untouched: with captures, an
    identity intervention at a hook point and a zeroing one at a name this 2-layer model does not reach
    (layers.2), the logits and the captures equal, bit for bit, those of the same call without the interceptor."""
    config, model, params = _tiny()
    if tied:
        config = config.replace(tie_word_embeddings=True)
        model, params = Qwen3ForCausalLM(config), init_params(config, seed=1)
    ids = jnp.asarray(np.random.RandomState(2).randint(0, 64, (2, 5)))
    mask = jnp.asarray([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])  # left padding: the kwargs must reach the layers
    position_ids = jnp.asarray([[0, 1, 2, 3, 4], [0, 0, 0, 1, 2]])
    args = ({"params": params}, ids, mask)
    plain = model.apply(*args, position_ids=position_ids)
    _, state = model.apply(*args, position_ids=position_ids, capture_intermediates=True, mutable=["intermediates"])
    h = hooks.HookInterceptor(["layers.0", "layers.1"], {"layers.0": lambda a: a, "layers.2": lambda a: a * 0})
    got = h.run(model.apply, *args, position_ids=position_ids)
    assert got.dtype == plain.dtype and got.shape == (2, 5, 64)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(plain))
    for i in range(2):
        np.testing.assert_array_equal(h.captured[f"layers.{i}"],
                                      state["intermediates"]["model"][f"layers_{i}"]["__call__"][0])


def test_apply_hands_captures_out_of_remat_layers():
    """Captures made inside checkpointed decoder layers (``remat_layers=True``: the interceptor runs inside each
    layer's jax.checkpoint) leave through the ``hooks`` collection: under jit + grad, no leaked tracer, every hook
    point equal to the plain model's, interventions applied once, and the same gradients through the captures."""
    config, model, params = _tiny()
    remat = Qwen3ForCausalLM(config, remat_layers=True)
    ids = jnp.asarray(np.random.RandomState(3).randint(0, 64, (2, 5)))
    names = hooks.hook_names(2)
    double = {"layers.0.mlp": lambda a: 2.0 * a}

    def loss(module, interventions, p):
        h = hooks.HookInterceptor(names, interventions)
        logits = h.apply(module, {"params": p}, ids)
        value = jnp.mean(jnp.square(logits)) + sum(jnp.mean(jnp.sin(3.0 * a)) for a in h.captured.values())
        return value, dict(h.captured)

    def run(module, interventions):
        return jax.jit(jax.value_and_grad(functools.partial(loss, module, interventions), has_aux=True))(params)

    (want, want_acts), want_grad = run(model, double)
    (got, got_acts), got_grad = run(remat, double)
    assert set(got_acts) == set(names)
    for name in names:
        np.testing.assert_allclose(got_acts[name], want_acts[name], rtol=1e-6, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got_grad, want_grad)
    (_, plain_acts), _ = run(remat, {})
    np.testing.assert_allclose(got_acts["layers.0.mlp"], 2.0 * plain_acts["layers.0.mlp"], rtol=1e-6)
    # without the collection (run), the same interceptor records straight into .captured, as before
    h = hooks.HookInterceptor(names, double)
    h.run(model.apply, {"params": params}, ids)
    for name in names:
        np.testing.assert_allclose(h.captured[name], got_acts[name], rtol=1e-6, atol=1e-6, err_msg=name)
