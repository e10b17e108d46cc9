"""Checkpoint loading/saving through the one HF <-> Flax mapping table."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.models.qwen3 import load_hf, save_hf
from qwen_sae_jax.safetensors_io import SafetensorsFile, save_file
from tests.models.qwen3.hf_reference import hf_logits


@pytest.mark.parametrize("tied,moe", [(False, False), (True, False), (False, True)], ids=["untied", "tied", "moe"])
def test_round_trip_through_transformers(hf_tiny, tmp_path, tied, moe):
    import transformers

    hf_model, path = hf_tiny(tie_word_embeddings=tied, moe=moe)
    config, params = load_hf(path)
    out = tmp_path / "saved"
    save_hf(params, config, out)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = np.arange(12, dtype=np.int32).reshape(2, 6)
    np.testing.assert_array_equal(hf_logits(reloaded, ids), hf_logits(hf_model, ids))
    config2, params2 = load_hf(out)
    assert config2 == config
    jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_sharded_checkpoint_with_index(hf_tiny, tmp_path):
    hf_model, path = hf_tiny()
    config, params = load_hf(path)
    out = tmp_path / "sharded"
    save_hf(params, config, out, max_shard_bytes=20_000)
    files = sorted(os.listdir(out))
    assert "model.safetensors.index.json" in files and "model.safetensors" not in files
    assert sum(f.endswith(".safetensors") for f in files) > 2
    _, params2 = load_hf(out)
    jax.tree.map(np.testing.assert_array_equal, params2, params)


def _bits(a):
    """The bfloat16 bit patterns of ``a`` (exact comparison: no tolerance, -0 != 0)."""
    a = np.asarray(a)
    assert a.dtype == jnp.bfloat16, a.dtype
    return a.view(np.uint16)


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_bfloat16_checkpoint_is_the_exact_cast_of_the_reference(hf_tiny, tmp_path, moe):
    """Saving with dtype=bfloat16 writes, tensor for tensor, the bits torch's own bfloat16 cast of the HF model
    writes; loading it gives exactly the bfloat16 cast of the float32 parameters (as bfloat16, or upcast)."""
    import torch

    hf_model, path = hf_tiny(moe=moe)
    config, params = load_hf(path)
    save_hf(params, config, tmp_path / "bf16", dtype=jnp.bfloat16)
    hf_model.to(torch.bfloat16).save_pretrained(tmp_path / "hf_bf16")  # the reference: torch's cast, HF's writer
    ours = SafetensorsFile(str(tmp_path / "bf16" / "model.safetensors"))
    ref = SafetensorsFile(str(tmp_path / "hf_bf16" / "model.safetensors"))
    assert sorted(ours.keys()) == sorted(ref.keys())
    for key in ref.keys():
        np.testing.assert_array_equal(_bits(ours.get(key)), _bits(ref.get(key)), err_msg=key)

    cast = jax.tree.map(lambda a: np.asarray(a.astype(jnp.bfloat16)), params)
    for source in (tmp_path / "bf16", tmp_path / "hf_bf16"):
        _, params_bf = load_hf(source, param_dtype=jnp.bfloat16)
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(_bits(a), _bits(b)), params_bf, cast)
        _, params_up = load_hf(source)  # float32 storage: the bfloat16 values upcast, exactly
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b.astype(np.float32)), params_up, cast)
    # casting while loading a float32 checkpoint rounds the same way
    _, params_cast = load_hf(path, param_dtype=jnp.bfloat16)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(_bits(a), _bits(b)), params_cast, cast)
    # and what was loaded as bfloat16 writes back the same bits
    _, params_bf = load_hf(tmp_path / "hf_bf16", param_dtype=jnp.bfloat16)
    save_hf(params_bf, config, tmp_path / "again")
    again = SafetensorsFile(str(tmp_path / "again" / "model.safetensors"))
    for key in ref.keys():
        np.testing.assert_array_equal(_bits(again.get(key)), _bits(ref.get(key)), err_msg=key)


def test_bad_checkpoint_lists_every_problem(hf_tiny, tmp_path):
    _, path = hf_tiny()
    f = SafetensorsFile(os.path.join(path, "model.safetensors"))
    tensors = {k: np.array(f.get(k)) for k in f.keys()}
    del tensors["model.layers.0.mlp.up_proj.weight"], tensors["model.norm.weight"]
    tensors["model.layers.0.self_attn.q_proj.weight"] = np.zeros((3, 3), np.float32)
    tensors["model.layers.7.foo.weight"] = np.zeros(2, np.float32)
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file(tensors, str(bad / "model.safetensors"))
    with open(os.path.join(path, "config.json")) as src, open(bad / "config.json", "w") as dst:
        dst.write(src.read())
    with pytest.raises(UserError) as err:
        load_hf(bad)
    msg = str(err.value)
    for needle in ("missing keys (2)", "model.layers.0.mlp.up_proj.weight", "model.norm.weight",
                   "unexpected keys (1)", "model.layers.7.foo.weight", "wrong shapes (1)",
                   "model.layers.0.self_attn.q_proj.weight: (3, 3) (expected (64, 32))"):
        assert needle in msg


def test_missing_weights_file(tmp_path, hf_tiny):
    _, path = hf_tiny()
    os.remove(os.path.join(path, "model.safetensors"))
    with pytest.raises(UserError, match="no model.safetensors"):
        load_hf(path)
