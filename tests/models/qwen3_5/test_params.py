"""Qwen3.5 checkpoints through the one HF <-> Flax table: both layouts, fused / per-expert experts, round trip
through transformers, sharded files, bad checkpoints, and sharded loading on 8 devices."""
import os
import shutil

import jax
import numpy as np
import pytest
import torch

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.lm import load_model
from qwen_sae_jax.models.qwen3_5.params import load_hf, save_hf
from qwen_sae_jax.safetensors_io import SafetensorsFile, save_file
from tests.models.qwen3_5.hf_reference import assert_close, hf_logits, reference

IDS = np.random.RandomState(0).randint(0, 128, (2, 9)).astype(np.int32)


def _tensors(path):
    f = SafetensorsFile(os.path.join(path, "model.safetensors"))
    return {k: np.array(f.get(k)) for k in f.keys()}


def _write(path, tensors, config_from):
    os.makedirs(path)
    save_file(tensors, os.path.join(path, "model.safetensors"))
    shutil.copy(os.path.join(config_from, "config.json"), path)


def _assert_same_params(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_conditional_generation_layout_loads_like_causal_lm(hf35, tmp_path):
    """``model.language_model.*`` with a vision tower and MTP heads in the file == the ``model.*`` text model."""
    import transformers

    hf_model, path = hf35()
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64)
    cg = transformers.Qwen3_5ForConditionalGeneration(transformers.Qwen3_5Config(
        text_config=hf_model.config.to_dict(), vision_config=vision))
    state = {k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k: v
             for k, v in hf_model.state_dict().items()}
    missing, unexpected = cg.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("model.visual.") for k in missing)
    cg_dir = tmp_path / "cg"
    cg.eval().save_pretrained(cg_dir)
    tensors = _tensors(cg_dir)
    assert any(k.startswith("model.visual.") for k in tensors)
    tensors["mtp.fc.weight"] = np.zeros((4, 4), np.float32)  # multi-token-prediction heads are ignored
    save_file(tensors, str(cg_dir / "model.safetensors"))

    config, params = load_hf(path)
    cg_config, cg_params = load_hf(cg_dir)
    assert cg_config == config
    _assert_same_params(cg_params, params)
    with torch.no_grad():
        want = cg(input_ids=torch.tensor(IDS)).logits.numpy()
    assert_close(np.asarray(load_model(str(cg_dir)).logits(IDS)), want)


def test_fused_and_per_expert_storage_load_alike(hf35, tmp_path):
    hf_model, path = hf35(moe=True)
    tensors = _tensors(path)
    assert "model.layers.0.mlp.experts.1.gate_proj.weight" in tensors  # transformers saves per expert
    config, params = load_hf(path)
    fused = {k: v for k, v in tensors.items() if ".mlp.experts." not in k}
    for i in range(config.num_hidden_layers):
        per = lambda e, w: tensors[f"model.layers.{i}.mlp.experts.{e}.{w}_proj.weight"]  # noqa: E731
        experts = range(config.num_experts)
        fused[f"model.layers.{i}.mlp.experts.gate_up_proj"] = np.stack(
            [np.concatenate([per(e, "gate"), per(e, "up")]) for e in experts])  # [E, 2I, D], gate rows first
        fused[f"model.layers.{i}.mlp.experts.down_proj"] = np.stack([per(e, "down") for e in experts])  # [E, D, I]
    fused_dir = tmp_path / "fused"
    _write(fused_dir, fused, path)
    _, fused_params = load_hf(fused_dir)
    _assert_same_params(fused_params, params)
    np.testing.assert_allclose(hf_logits(reference(fused_dir, moe=True), IDS), hf_logits(hf_model, IDS), rtol=0,
                               atol=1e-6)  # transformers reads the fused file as the same model


@pytest.mark.parametrize("overrides", [dict(), dict(tie_word_embeddings=True), dict(moe=True)],
                         ids=["untied", "tied", "moe"])
def test_save_hf_round_trip_through_transformers(hf35, tmp_path, overrides):
    hf_model, path = hf35(**overrides)
    config, params = load_hf(path)
    out = tmp_path / "saved"
    save_hf(params, config, out)
    reloaded = reference(out, moe=config.is_moe)
    np.testing.assert_array_equal(hf_logits(reloaded, IDS), hf_logits(hf_model, IDS))
    config2, params2 = load_hf(out)
    assert config2 == config
    _assert_same_params(params2, params)


def test_sharded_checkpoint_with_index(hf35, tmp_path):
    _, path = hf35(moe=True)
    config, params = load_hf(path)
    out = tmp_path / "sharded"
    save_hf(params, config, out, max_shard_bytes=30_000)
    files = sorted(os.listdir(out))
    assert "model.safetensors.index.json" in files and "model.safetensors" not in files
    assert sum(f.endswith(".safetensors") for f in files) > 2
    _assert_same_params(load_hf(out)[1], params)


def test_bad_checkpoint_lists_every_problem(hf35, tmp_path):
    _, path = hf35()
    tensors = _tensors(path)
    del tensors["model.layers.0.linear_attn.A_log"], tensors["model.layers.1.self_attn.q_norm.weight"]
    tensors["model.layers.0.linear_attn.conv1d.weight"] = np.zeros((96, 4), np.float32)
    tensors["model.layers.1.linear_attn.out_proj.weight"] = np.zeros((64, 64), np.float32)  # layer 1 is full
    bad = tmp_path / "bad"
    _write(bad, tensors, path)
    with pytest.raises(UserError) as err:
        load_hf(bad)
    msg = str(err.value)
    for needle in ("missing keys (2)", "model.layers.0.linear_attn.A_log", "model.layers.1.self_attn.q_norm.weight",
                   "unexpected keys (1)", "model.layers.1.linear_attn.out_proj.weight", "wrong shapes (1)",
                   "model.layers.0.linear_attn.conv1d.weight: (96, 4) (expected (96, 1, 4))"):
        assert needle in msg, needle


@pytest.mark.slow
def test_sharded_load_on_2x4_mesh_equals_single_device(hf35):
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    assert len(jax.devices()) == 8
    _, path = hf35(moe=True, num_hidden_layers=4, full_attention_interval=2, hidden_size=64, linear_num_key_heads=4,
                   linear_num_value_heads=8)
    single = load_model(path)
    sharded = load_model(path, mesh=Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model")))
    lin = sharded.params["model"]["layers_0"]["linear_attn"]
    qkv = lin["in_proj_qkv"]["kernel"]  # [64, 2*4*8 + 8*16 = 192]
    assert qkv.sharding.spec == P("data", "model") and qkv.addressable_shards[0].data.shape == (32, 48)
    assert lin["conv1d"]["kernel"].sharding.spec == P(None, "model")
    experts = sharded.params["model"]["layers_1"]["mlp"]["experts"]["gate_proj"]  # [E=4, D=64, I=32]
    assert experts.sharding.spec == P("model", "data", None) and experts.addressable_shards[0].data.shape == (1, 32, 32)
    ids = np.random.RandomState(5).randint(0, 128, (4, 70)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :20] = 0
    assert_close(sharded.logits(ids, mask), single.logits(ids, mask), rtol=1e-5)
    a = sharded.capture(ids, ["layers.2.linear_attn"], mask)["layers.2.linear_attn"]
    assert_close(a, single.capture(ids, ["layers.2.linear_attn"], mask)["layers.2.linear_attn"], rtol=1e-5)
