"""Hook points of a hybrid Qwen3.5 model through LanguageModel: every hook against transformers' module outputs,
names of both layer kinds, the hook_attn_out alias, wrong-kind errors, truncated capture, interventions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from qwen_sae_jax import lm as lm_module
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.lm import load_model
from tests.models.qwen3_5.hf_reference import assert_close, build_hf

LAYER_TYPES = ["linear_attention", "full_attention", "linear_attention"]


def torch_hook_points(model, ids, mask=None, position_ids=None, edit=None):
    """``(logits, {hook name: activation})`` of the torch model; ``edit = (hook name, fn)`` replaces that activation."""
    acts, handles = {}, []

    def record(key, tensor):
        if edit is not None and edit[0] == key:
            tensor = edit[1](tensor)
        acts[key] = tensor.detach().numpy().copy()
        return tensor

    for i, layer in enumerate(model.model.layers):
        def pre(mod, args, kwargs, i=i):
            if args:
                return (record(f"layers.{i}.input", args[0]),) + tuple(args[1:]), kwargs
            return args, {**kwargs, "hidden_states": record(f"layers.{i}.input", kwargs["hidden_states"])}
        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        mixer = "linear_attn" if hasattr(layer, "linear_attn") else "self_attn"
        for name, mod in ((mixer, getattr(layer, mixer)), ("mlp", layer.mlp), ("", layer)):
            key = f"layers.{i}" + (f".{name}" if name else "")

            def post(mod, args, out, key=key):
                if isinstance(out, tuple):
                    return (record(key, out[0]),) + tuple(out[1:])
                return record(key, out)
            handles.append(mod.register_forward_hook(post))
    t = lambda a: None if a is None else torch.tensor(np.asarray(a))  # noqa: E731
    try:
        with torch.no_grad():
            logits = model(input_ids=t(ids), attention_mask=t(mask), position_ids=t(position_ids)).logits.numpy()
    finally:
        for h in handles:
            h.remove()
    return logits, acts


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    hf_model, path = build_hf(tmp_path_factory.mktemp("hybrid"), seed=2, num_hidden_layers=3, layer_types=LAYER_TYPES)
    return hf_model, load_model(path)


def _padded_batch():
    ids = np.random.RandomState(0).randint(0, 128, (2, 70)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :5] = 0  # left padding
    return ids, mask


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_every_hook_point_matches_transformers_on_padded_batch(tmp_path, moe):
    hf_model, path = build_hf(tmp_path, moe=moe, seed=1)
    lm = load_model(path)
    ids, mask = _padded_batch()
    positions = np.asarray(lm_module.positions_from_mask(mask))
    want_logits, want = torch_hook_points(hf_model, ids, mask, positions)
    got = lm.capture(ids, lm.hook_names, attention_mask=mask)
    assert list(got) == lm.hook_names == ["layers.0.input", "layers.0.linear_attn", "layers.0.mlp", "layers.0",
                                          "layers.1.input", "layers.1.self_attn", "layers.1.mlp", "layers.1"]
    valid = mask.astype(bool)
    for name in lm.hook_names:
        assert_close(np.asarray(got[name])[valid], want[name][valid], where=name)
    assert_close(np.asarray(lm.logits(ids, attention_mask=mask))[valid], want_logits[valid])


def test_attn_out_alias_names_each_layers_mixer_and_wrong_kind_errors(hybrid):
    _, lm = hybrid
    assert lm.resolve_hooks("blocks.*.hook_attn_out") == ["layers.0.linear_attn", "layers.1.self_attn",
                                                          "layers.2.linear_attn"]
    assert lm.resolve_hooks("layers.*.linear_attn") == ["layers.0.linear_attn", "layers.2.linear_attn"]
    acts = lm.capture(np.arange(10, dtype=np.int32).reshape(2, 5), ["blocks.0.hook_attn_out", "blocks.1.hook_attn_out"])
    assert list(acts) == ["layers.0.linear_attn", "layers.1.self_attn"]
    with pytest.raises(UserError) as err:
        lm.resolve_hooks(["layers.0.self_attn", "layers.1.linear_attn", "layers.3"])
    msg = str(err.value)
    assert "'layers.0.self_attn' (layer 0 is a Gated DeltaNet (linear_attention) layer: its mixer is " \
           "layers.0.linear_attn)" in msg
    assert "'layers.1.linear_attn' (layer 1 is a full-attention layer: its mixer is layers.1.self_attn)" in msg
    assert "'layers.3'" in msg and "full-attention layers N in {1}" in msg and "0..2" in msg
    assert "\n" not in msg


def test_capture_stops_at_the_deepest_requested_layer(hybrid):
    _, lm = hybrid
    ids = jnp.asarray(np.arange(12, dtype=np.int32).reshape(2, 6))

    def dots(capture):
        jaxpr = jax.make_jaxpr(lambda p, x: lm.apply(p, x, capture=capture, stop_after_capture=True))(lm.params, ids)
        return str(jaxpr).count("dot_general")

    full = str(jax.make_jaxpr(lambda p, x: lm.apply(p, x)[0])(lm.params, ids)).count("dot_general")
    assert dots(["layers.0.input"]) == 0
    assert 0 < dots(["layers.0"]) < dots(["layers.1"]) < dots(["layers.2"]) < full
    assert dots(["layers.1.self_attn"]) == dots(["layers.1.input", "layers.1"])  # whole layers, the deepest one
    logits, acts = lm.apply(lm.params, ids, capture=["layers.2.input"], stop_after_capture=True)
    assert logits is None
    np.testing.assert_allclose(acts["layers.2.input"], lm.apply(lm.params, ids, capture=["layers.1"])[1]["layers.1"],
                               atol=1e-6)


@pytest.mark.slow
def test_interventions_at_every_hook_match_torch(hybrid):
    hf_model, lm = hybrid
    ids, mask = _padded_batch()
    ids, mask = ids[:, -12:], mask[:, -12:]
    positions = np.asarray(lm_module.positions_from_mask(mask))
    vec = np.random.RandomState(3).randn(64).astype(np.float32)
    valid = mask.astype(bool)
    base = np.asarray(lm.logits(ids, mask))
    for name in lm.hook_names:
        want, _ = torch_hook_points(hf_model, ids, mask, positions, edit=(name, lambda t: 0.5 * t + torch.tensor(vec)))
        got = np.asarray(lm.logits(ids, mask, interventions={name: lambda a: 0.5 * a + vec}))
        assert_close(got[valid], want[valid], where=name)
        assert np.abs(got - base).max() > 1e-3, name  # the intervention changed something
