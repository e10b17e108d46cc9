"""Each export format, loaded with plain torch + safetensors and run through a PyTorch reference written
here from that format's own conventions, gives the JAX SAE's latents and reconstruction (1e-5)."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.interop.export import export_saes
from tests.interop.conftest import make_inputs, make_sae

TOL = dict(rtol=1e-5, atol=1e-5)


def _dense(pre, vals, idx):
    return torch.zeros_like(pre).scatter(-1, idx, vals)


def saelens_reference(folder, x):
    """SAELens v6 inference SAEs (standard / topk / jumprelu), transcribed from their conventions."""
    cfg = json.loads((folder / "cfg.json").read_text())
    w = load_file(str(folder / "sae_weights.safetensors"))
    assert cfg["normalize_activations"] == "none"
    sae_in = x - w["b_dec"] * cfg["apply_b_dec_to_input"]
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    if cfg["architecture"] == "standard":
        z = torch.relu(pre)
    elif cfg["architecture"] == "topk":
        assert cfg["rescale_acts_by_decoder_norm"] is False
        vals, idx = torch.topk(pre, cfg["k"], dim=-1)          # TopK, then ReLU
        z = _dense(pre, torch.relu(vals), idx)
    elif cfg["architecture"] == "jumprelu":
        z = torch.relu(pre) * (pre > torch.relu(w["threshold"]))
    else:
        raise AssertionError(cfg["architecture"])
    return z, z @ w["W_dec"] + w["b_dec"]


def sparsify_reference(folder, x):
    """sparsify SparseCoder: x - b_dec, nn.Linear encoder, ReLU, TopK, gather decode + b_dec."""
    cfg = json.loads((folder / "cfg.json").read_text())
    w = load_file(str(folder / "sae.safetensors"))
    assert cfg["activation"] == "topk" and w["encoder.weight"].shape == (cfg["num_latents"], cfg["d_in"])
    pre = torch.relu(torch.nn.functional.linear(x - w["b_dec"], w["encoder.weight"], w["encoder.bias"]))
    vals, idx = pre.topk(cfg["k"], dim=-1)                      # ReLU, then TopK
    x_hat = (vals[..., None] * w["W_dec"][idx]).sum(-2) + w["b_dec"]
    return _dense(pre, vals, idx), x_hat


def qwen_scope_reference(file, k, x):
    """Qwen-Scope layer file: no b_dec subtraction, ReLU then TopK, W_enc [d_sae, d_model]."""
    p = torch.load(str(file), weights_only=True)
    assert set(p) == {"W_enc", "W_dec", "b_enc", "b_dec"}
    pre = torch.relu(x @ p["W_enc"].T + p["b_enc"])
    vals, idx = pre.topk(k, dim=-1)
    z = _dense(pre, vals, idx)
    return z, z @ p["W_dec"].T + p["b_dec"]


def _compare(sae, z_ref, x_hat_ref, x):
    z = np.asarray(sae.encode(x))
    np.testing.assert_allclose(z_ref.numpy(), z, **TOL)
    np.testing.assert_allclose(x_hat_ref.numpy(), np.asarray(sae(x)), **TOL)
    assert (z != 0).sum() > 0


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "jumprelu", "relu"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saelens_matches_torch_reference(tmp_path, architecture, apply_b_dec):
    sae = make_sae(architecture, apply_b_dec, act_scale=0.37)
    x = make_inputs()
    export_saes({"s": sae}, tmp_path / "out", "saelens")
    cfg = json.loads((tmp_path / "out" / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.2.hook_resid_post"
    assert cfg["metadata"]["model_name"] == "tiny"
    assert cfg["architecture"] == {"relu": "standard", "batchtopk": "jumprelu"}.get(architecture, architecture)
    assert (tmp_path / "out" / "README.md").is_file()
    _compare(sae, *saelens_reference(tmp_path / "out", torch.from_numpy(x)), x)


@pytest.mark.parametrize("architecture", ["topk", "relu"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_sparsify_matches_torch_reference(tmp_path, architecture, apply_b_dec):
    sae = make_sae(architecture, apply_b_dec, act_scale=2.5, hook="layers.1.mlp")
    x = make_inputs()
    export_saes({"s": sae}, tmp_path / "out", "sparsify")
    _compare(sae, *sparsify_reference(tmp_path / "out" / "layers.1.mlp", torch.from_numpy(x)), x)


@pytest.mark.parametrize("architecture", ["topk", "relu"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_qwen_scope_matches_torch_reference(tmp_path, architecture, apply_b_dec):
    sae = make_sae(architecture, apply_b_dec, act_scale=0.61, hook="layers.3")
    x = make_inputs()
    export_saes({"s": sae}, tmp_path / "out", "qwen-scope")
    side = json.loads((tmp_path / "out" / "qwen_scope.json").read_text())
    k = side["layers"]["3"]["k"]
    assert k == (sae.cfg.k or sae.cfg.d_sae)
    _compare(sae, *qwen_scope_reference(tmp_path / "out" / "layer3.sae.pt", k, torch.from_numpy(x)), x)


def test_sparsify_multi_hook_layout_and_variant_names(tmp_path):
    saes = {"layers.1.mlp__topk-k6": make_sae(hook="layers.1.mlp"),
            "layers.1.mlp__topk-k6b": make_sae(hook="layers.1.mlp", seed=3),
            "layers.2": make_sae(hook="layers.2", seed=4)}
    export_saes(saes, tmp_path / "repo", "sparsify")
    folders = sorted(p.name for p in (tmp_path / "repo").iterdir() if p.is_dir())
    assert folders == ["layers.1.mlp__topk-k6", "layers.1.mlp__topk-k6b", "layers.2"]
    x = make_inputs()
    _compare(saes["layers.2"], *sparsify_reference(tmp_path / "repo" / "layers.2", torch.from_numpy(x)), x)


def test_saelens_multi_sae_folders_use_transformer_lens_names(tmp_path):
    saes = {"a": make_sae(hook="layers.0.self_attn"), "b": make_sae(hook="layers.0.input", seed=2)}
    export_saes(saes, tmp_path / "out", "saelens", log_densities={"a": np.full(48, -2.0, np.float32)})
    assert (tmp_path / "out" / "blocks.0.hook_attn_out" / "sparsity.safetensors").is_file()
    assert not (tmp_path / "out" / "blocks.0.hook_resid_pre" / "sparsity.safetensors").exists()
    sparsity = load_file(str(tmp_path / "out" / "blocks.0.hook_attn_out" / "sparsity.safetensors"))
    np.testing.assert_array_equal(sparsity["sparsity"].numpy(), -2.0)


@pytest.mark.parametrize("format,architecture,hook,message", [
    ("sparsify", "jumprelu", "layers.1", "TopK only"),
    ("qwen-scope", "batchtopk", "layers.1", "no threshold"),
    ("qwen-scope", "topk", "layers.1.mlp", "residual-stream"),
])
def test_inexpressible_exports_are_refused_and_leave_nothing(tmp_path, format, architecture, hook, message):
    saes = {"ok": make_sae(hook="layers.0"), "bad": make_sae(architecture, hook=hook)}
    with pytest.raises(UserError, match=message):
        export_saes(saes, tmp_path / "out", format)
    assert list(tmp_path.iterdir()) == []
