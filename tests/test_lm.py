"""LanguageModel: every hook point against transformers' module outputs, interventions, loading paths, sharding."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from qwen_sae_jax import lm as lm_module
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.lm import load_model

ATOL = 1e-4
TINY = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16)


def build_hf(path, moe=False, seed=0, **overrides):
    """Random transformers model saved to ``path``; returns the torch model (eval mode)."""
    import transformers

    torch.manual_seed(seed)
    kw = {**TINY, **overrides}
    if moe:
        model = transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
            **kw, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=24, norm_topk_prob=True))
    else:
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**kw))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("mlp.gate.weight"):
                p.mul_(50.0)
    model.eval().save_pretrained(path)
    return model


def torch_hook_points(model, ids, mask=None, position_ids=None, edit=None):
    """Run the torch model recording every hook point; ``edit`` = (module, fn) modifies that module's output."""
    acts, handles = {}, []
    for i, layer in enumerate(model.model.layers):
        def pre(mod, args, kwargs, i=i):
            acts[f"layers.{i}.input"] = (args[0] if args else kwargs["hidden_states"]).detach().numpy().copy()
        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        for name, mod in (("self_attn", layer.self_attn), ("mlp", layer.mlp), ("", layer)):
            key = f"layers.{i}" + (f".{name}" if name else "")

            def post(mod, args, out, key=key):
                tensor = out[0] if isinstance(out, tuple) else out
                if edit is not None and edit[0] == key:
                    tensor = edit[1](tensor)
                acts[key] = tensor.detach().numpy().copy()
                return (tensor,) + tuple(out[1:]) if isinstance(out, tuple) else tensor
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
def dense(tmp_path_factory):
    path = tmp_path_factory.mktemp("dense")
    return build_hf(path), load_model(str(path)), str(path)


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_every_hook_point_matches_transformers_on_padded_batch(tmp_path, moe):
    hf_model = build_hf(tmp_path, moe=moe, seed=1)
    lm = load_model(str(tmp_path))
    ids = np.random.RandomState(0).randint(0, 128, (2, 7)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :3] = 0  # left padding
    positions = np.asarray(lm_module.positions_from_mask(mask))
    want_logits, want = torch_hook_points(hf_model, ids, mask, positions)
    got = lm.capture(ids, lm.hook_names, attention_mask=mask)
    assert list(got) == lm.hook_names and len(got) == 4 * 3
    valid = mask.astype(bool)
    for name in lm.hook_names:
        np.testing.assert_allclose(np.asarray(got[name])[valid], want[name][valid], atol=ATOL, rtol=0, err_msg=name)
    logits = lm.logits(ids, attention_mask=mask)
    np.testing.assert_allclose(np.asarray(logits)[valid], want_logits[valid], atol=ATOL, rtol=0)


def test_aliases_and_globs(dense):
    _, lm, _ = dense
    ids = np.arange(10, dtype=np.int32).reshape(2, 5)
    acts = lm.capture(ids, ["blocks.1.hook_attn_out", "layers.[0-1]", "blocks.2.hook_resid_pre"])
    assert list(acts) == ["layers.0", "layers.1.self_attn", "layers.1", "layers.2.input"]
    np.testing.assert_array_equal(np.asarray(acts["layers.1"]), np.asarray(acts["layers.2.input"]))
    assert lm.resolve_hooks("layers.*.mlp") == ["layers.0.mlp", "layers.1.mlp", "layers.2.mlp"]


def test_unknown_hook_lists_valid_names(dense):
    _, lm, _ = dense
    with pytest.raises(UserError) as err:
        lm.capture(np.zeros((1, 2), np.int32), ["layers.1.mpl", "layers.9"])
    msg = str(err.value)
    assert "'layers.1.mpl'" in msg and "did you mean 'layers.1.mlp'" in msg and "'layers.9'" in msg
    assert "layers.N.self_attn" in msg and "0..2" in msg


def test_stop_after_capture_skips_upper_layers_and_head(dense):
    _, lm, _ = dense
    ids = jnp.asarray(np.arange(12, dtype=np.int32).reshape(2, 6))

    def program(capture, stop):
        forward = lambda p, x: lm.apply(p, x, capture=capture, stop_after_capture=stop)  # noqa: E731
        return str(jax.make_jaxpr(forward)(lm.params, ids))

    full = program(["layers.0"], False).count("dot_general")
    stopped = program(["layers.0"], True).count("dot_general")
    per_layer = (program(["layers.1"], True).count("dot_general") - stopped)
    assert per_layer > 0 and stopped == per_layer  # one layer's matmuls, no LM head
    assert full == 3 * per_layer + 1
    logits, acts = lm.apply(lm.params, ids, capture=["layers.1.input"], stop_after_capture=True)
    assert logits is None
    _, full_acts = lm.apply(lm.params, ids, capture=["layers.0"])
    np.testing.assert_allclose(acts["layers.1.input"], full_acts["layers.0"], atol=1e-6)
    _, emb = lm.apply(lm.params, ids, capture=["layers.0.input"], stop_after_capture=True)
    np.testing.assert_array_equal(emb["layers.0.input"], lm.params["model"]["embed_tokens"]["embedding"][ids])


def test_interventions_match_torch_forward_hooks(dense):
    hf_model, lm, _ = dense
    ids = np.random.RandomState(2).randint(0, 128, (2, 6)).astype(np.int32)
    vec = np.random.RandomState(3).randn(32).astype(np.float32)
    cases = [("layers.1.mlp", lambda a: a * 0, lambda t: t * 0),
             ("layers.0", lambda a: a + vec, lambda t: t + torch.tensor(vec)),
             ("blocks.2.hook_attn_out", lambda a: -a, lambda t: -t)]
    base = np.asarray(lm.logits(ids))
    for name, jax_fn, torch_fn in cases:
        canonical = lm.resolve_hooks(name)[0]
        want, _ = torch_hook_points(hf_model, ids, edit=(canonical, torch_fn))
        got = np.asarray(lm.logits(ids, interventions={name: jax_fn}))
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0, err_msg=name)
        assert np.abs(got - base).max() > 1e-3  # the intervention changed something
    # an intervention upstream changes what is captured downstream; capture records post-intervention values
    acts = lm.capture(ids, ["layers.1.mlp", "layers.2"], interventions={"layers.1.mlp": lambda a: a * 0})
    assert float(jnp.abs(acts["layers.1.mlp"]).max()) == 0.0
    # replacing the input of layer 1 equals replacing the output of layer 0
    x = jnp.ones((2, 6, 32))
    a = lm.logits(ids, interventions={"layers.1.input": lambda _: x})
    b = lm.logits(ids, interventions={"layers.0": lambda _: x})
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_inputs(dense):
    _, lm, path = dense
    with pytest.raises(UserError, match=r"token ids must be in \[0, 128\)"):
        lm.logits(np.array([[1, 128]]))
    with pytest.raises(UserError, match="batch, seq"):
        lm.logits(np.array([1, 2, 3]))
    with pytest.raises(UserError, match="attention_mask shape"):
        lm.logits(np.ones((2, 3), np.int32), attention_mask=np.ones((2, 4)))
    with pytest.raises(UserError, match="returned shape"):
        lm.logits(np.ones((1, 3), np.int32), interventions={"layers.0": lambda a: a[:, :1]})
    with pytest.raises(UserError, match="dtype='float8'"):
        load_model(path, dtype="float8")


def test_load_model_errors_and_tiny(monkeypatch, tmp_path):
    with pytest.raises(UserError, match="neither an embedded model \\('tiny', 'tiny-qwen3.5'\\), "
                                        "an existing directory, nor a hub id"):
        load_model("./no/such/dir")
    # hub ids resolve through huggingface_hub; with HF_HUB_OFFLINE and an empty cache: a clear error
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="not in the Hugging Face cache"):
        load_model("nobody/no-such-model")
    monkeypatch.setitem(lm_module.EMBEDDED_MODELS, "tiny-qwen3.5", str(tmp_path / "tiny-missing"))
    with pytest.raises(UserError, match="embedded model 'tiny-qwen3.5' is missing"):
        load_model("tiny-qwen3.5")


def test_hub_id_loads_from_offline_cache(monkeypatch, tmp_path, dense):
    """A hub id found in the HF cache loads offline (the cache layout huggingface_hub writes)."""
    import huggingface_hub.constants as hf_constants

    _, lm, path = dense
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--someone--tiny-qwen3"
    shutil.copytree(path, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    lm2 = load_model("someone/tiny-qwen3")
    ids = np.arange(8, dtype=np.int32).reshape(1, 8)
    np.testing.assert_array_equal(np.asarray(lm2.logits(ids)), np.asarray(lm.logits(ids)))


def test_sharded_load_on_2x4_mesh_equals_single_device(tmp_path):
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    assert len(jax.devices()) == 8
    build_hf(tmp_path, moe=True, seed=4, hidden_size=64, num_attention_heads=8, num_key_value_heads=4)
    single = load_model(str(tmp_path))
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    sharded = load_model(str(tmp_path), mesh=mesh)
    q = sharded.params["model"]["layers_0"]["self_attn"]["q_proj"]["kernel"]  # [64, 128]
    assert q.sharding.spec == P("data", "model")
    assert q.addressable_shards[0].data.shape == (32, 32)  # no device holds the whole matrix
    experts = sharded.params["model"]["layers_1"]["mlp"]["experts"]["gate_proj"]  # [E=8, D=64, I=24]
    assert experts.sharding.spec == P("model", "data", None)
    assert experts.addressable_shards[0].data.shape == (2, 32, 24)
    ids = np.random.RandomState(5).randint(0, 128, (4, 6)).astype(np.int32)
    got = sharded.logits(ids)
    np.testing.assert_allclose(np.asarray(got), np.asarray(single.logits(ids)), atol=1e-5, rtol=0)
    a = sharded.capture(ids, ["layers.1.mlp"])["layers.1.mlp"]
    b = single.capture(ids, ["layers.1.mlp"])["layers.1.mlp"]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)


def test_capture_cli_writes_npy_per_hook(dense, tmp_path, capsys):
    from qwen_sae_jax.cli import main

    _, lm, path = dense
    out = tmp_path / "acts"
    code = main(["capture", "--model", path, "--hooks", "layers.*.mlp", "blocks.0.hook_resid_post",
                 "--tokens", "1 2 3 4", "--tokens", "5,6", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "layers.2.mlp" in printed and "(2, 4, 32)" in printed
    ids, mask = np.load(out / "input_ids.npy"), np.load(out / "attention_mask.npy")
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    want = lm.capture(ids, ["layers.0", "layers.1.mlp"], attention_mask=mask)
    np.testing.assert_allclose(np.load(out / "layers.1.mlp.npy"), want["layers.1.mlp"], atol=1e-6)
    np.testing.assert_allclose(np.load(out / "layers.0.npy"), want["layers.0"], atol=1e-6)
    assert sorted(p.name for p in out.iterdir()) == ["attention_mask.npy", "input_ids.npy", "layers.0.mlp.npy",
                                                     "layers.0.npy", "layers.1.mlp.npy", "layers.2.mlp.npy"]
    assert main(["capture", "--model", path, "--hooks", "layers.7", "--tokens", "1", "--out", str(out)]) == 2
    assert "unknown hook name" in capsys.readouterr().err
