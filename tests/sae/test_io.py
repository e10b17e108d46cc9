import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.sae import SAE, SAEConfig, fold_act_scale, init_sae, load_native_sae, save_sae


def _sae(dtype="float32"):
    cfg = SAEConfig(architecture="jumprelu", d_in=6, d_sae=20, hook_name="layers.1.mlp", model_name="tiny",
                    normalize_activations=True, dtype=dtype)
    x = jax.random.normal(jax.random.key(0), (32, 6)) * 5
    sae = init_sae(cfg, jax.random.key(1), x)
    return sae.replace(b_enc=jnp.linspace(-1, 1, 20).astype(sae.b_enc.dtype))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_save_load_roundtrip(tmp_path, dtype):
    sae = _sae(dtype)
    save_sae(sae, tmp_path / "sae")
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == ["cfg.json", "sae.safetensors"]
    assert json.loads((tmp_path / "sae" / "cfg.json").read_text())["hook_name"] == "layers.1.mlp"
    loaded = load_native_sae(tmp_path / "sae")
    assert isinstance(loaded, SAE) and loaded.cfg == sae.cfg
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "act_scale"):
        assert getattr(loaded, name).dtype == getattr(sae, name).dtype
        np.testing.assert_array_equal(np.asarray(getattr(loaded, name), np.float32),
                                      np.asarray(getattr(sae, name), np.float32))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_refuses_overwrite_unless_asked(tmp_path):
    sae = _sae()
    save_sae(sae, tmp_path / "sae")
    with pytest.raises(UserError, match="overwrite=True"):
        save_sae(sae, tmp_path / "sae")
    changed = sae.replace(b_dec=sae.b_dec + 1)
    save_sae(changed, tmp_path / "sae", overwrite=True)
    np.testing.assert_allclose(load_native_sae(tmp_path / "sae").b_dec, changed.b_dec)
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]


def test_refuses_to_save_non_finite(tmp_path):
    sae = _sae()
    with pytest.raises(UserError, match="W_dec contains NaN"):
        save_sae(sae.replace(W_dec=sae.W_dec.at[0, 0].set(jnp.nan)), tmp_path / "sae")
    assert not (tmp_path / "sae").exists()


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(UserError, match="no SAE folder"):
        load_native_sae(tmp_path / "missing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "cfg.json").write_text("{}")
    with pytest.raises(UserError, match="missing sae.safetensors"):
        load_native_sae(tmp_path / "half")
    save_sae(_sae(), tmp_path / "bad")
    meta = json.loads((tmp_path / "bad" / "cfg.json").read_text())
    meta["d_sae"] = 21
    (tmp_path / "bad" / "cfg.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="W_enc has shape"):
        load_native_sae(tmp_path / "bad")


def test_fold_act_scale_gives_the_same_function_on_raw_inputs():
    sae = _sae()
    assert abs(float(sae.act_scale) - 1.0) > 0.05
    folded = fold_act_scale(sae)
    assert float(folded.act_scale) == 1.0
    x = jax.random.normal(jax.random.key(3), (5, 6)) * 5
    np.testing.assert_allclose(folded.encode(x), sae.encode(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(folded(x), sae(x), rtol=1e-5, atol=1e-5)


_WRITE_TWICE = """
import sys
import jax, jax.numpy as jnp
from qwen_sae_jax.sae import SAEConfig, init_sae, save_sae
from qwen_sae_jax.interop import export_saes
cfg = SAEConfig(architecture="topk", d_in=6, d_sae=20, k=3, hook_name="layers.1", model_name="tiny")
sae = init_sae(cfg, jax.random.key(1), jax.random.normal(jax.random.key(0), (32, 6)) * 5)
save_sae(sae, sys.argv[1] + "/native")
for fmt in ("saelens", "sparsify", "qwen-scope"):
    export_saes({"layers.1": sae}, sys.argv[1] + "/" + fmt, fmt)
"""


def test_the_same_sae_is_written_byte_for_byte_the_same_by_two_processes(tmp_path):
    """safetensors headers (metadata in hash-map order in the `safetensors` package) and JSON files are written
    with sorted keys: two processes with different hash seeds write identical bytes, native and every export."""
    import os
    import subprocess
    import sys

    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"run{seed}"
        out.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", _WRITE_TWICE, str(out)], check=True, env=env, timeout=300)
        outs.append(out)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert len(files) >= 6 and any(f.suffix == ".safetensors" for f in files)
    assert files == sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*") if p.is_file())
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f


def test_sparse_selections_are_named_tuples():
    from qwen_sae_jax.sae.select import select_topk

    cfg = SAEConfig(architecture="topk", d_in=6, d_sae=20, k=3)
    sae = init_sae(cfg, jax.random.key(1))
    x = jax.random.normal(jax.random.key(0), (5, 6))
    latents = sae.encode_topk(x)
    acts, idx = latents
    assert latents.acts is acts and latents.idx is idx and latents.idx.shape == (5, 3)
    chosen = select_topk(x - sae.b_dec, sae.W_enc, sae.b_enc, 3, "xla")
    np.testing.assert_array_equal(chosen.idx, idx)
    assert chosen.pre.shape == (5, 20) and chosen.acts.shape == (5, 3)
