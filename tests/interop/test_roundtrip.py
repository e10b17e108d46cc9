"""native -> format -> native: bit-exact where the format stores the SAE as it is; where the format forces
a fold (input scale, b_dec convention) the function is kept (1e-5) and re-exporting is byte-identical."""
import numpy as np
import pytest
from safetensors.numpy import load_file as np_load_file

from qwen_sae_jax.interop import load_sae, load_saes
from qwen_sae_jax.interop.export import export_saes
from qwen_sae_jax.sae import save_sae
from tests.interop.conftest import make_inputs, make_sae

PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "act_scale")


def _assert_same(a, b):
    assert a.cfg == b.cfg
    for name in PARAMS:
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)


# (format, architecture, apply_b_dec_to_input, hook) that the format stores without any fold
EXACT = [("saelens", arch, apply, "layers.2") for arch in ("topk", "batchtopk", "jumprelu", "relu")
         for apply in (True, False)]
EXACT += [("sparsify", "topk", True, "layers.2.mlp"), ("sparsify", "relu", True, "layers.0.self_attn"),
          ("qwen-scope", "topk", False, "layers.2"), ("qwen-scope", "relu", False, "layers.5")]


@pytest.mark.parametrize("format,architecture,apply_b_dec,hook", EXACT)
def test_roundtrip_is_exact(tmp_path, format, architecture, apply_b_dec, hook):
    sae = make_sae(architecture, apply_b_dec, act_scale=1.0, hook=hook)
    sae = sae.replace(cfg=sae.cfg.replace(normalize_activations=False))
    export_saes({"s": sae}, tmp_path / "out", format)
    back = load_sae(tmp_path / "out")                         # format auto-detected
    _assert_same(sae, back)


@pytest.mark.parametrize("format,architecture,apply_b_dec", [
    ("saelens", "jumprelu", True), ("sparsify", "topk", False), ("qwen-scope", "topk", True),
    ("qwen-scope", "relu", True)])
def test_folded_roundtrip_keeps_the_function_and_reexport_is_identical(tmp_path, format, architecture,
                                                                        apply_b_dec):
    hook = "layers.4"
    sae = make_sae(architecture, apply_b_dec, act_scale=0.43, hook=hook)
    x = make_inputs()
    export_saes({"s": sae}, tmp_path / "a", format)
    back = load_sae(tmp_path / "a", format=format)
    assert float(back.act_scale) == 1.0 and back.cfg.normalize_activations is False
    assert back.cfg.architecture == architecture and back.cfg.k == sae.cfg.k
    assert back.cfg.hook_name == hook and back.cfg.model_name == "tiny"
    assert back.cfg.l1_coefficient == 3.5                    # training settings travel in the metadata
    np.testing.assert_allclose(np.asarray(back.encode(x)), np.asarray(sae.encode(x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(sae(x)), rtol=1e-5, atol=1e-5)
    export_saes({"s": back}, tmp_path / "b", format)
    for file_a in sorted((tmp_path / "a").rglob("*")):
        file_b = tmp_path / "b" / file_a.relative_to(tmp_path / "a")
        if file_a.suffix == ".safetensors":
            ta, tb = np_load_file(str(file_a)), np_load_file(str(file_b))
            assert ta.keys() == tb.keys()
            for key in ta:
                np.testing.assert_array_equal(ta[key], tb[key])
        elif file_a.suffix == ".pt":
            import torch
            ta, tb = torch.load(file_a, weights_only=True), torch.load(file_b, weights_only=True)
            assert all(torch.equal(ta[key], tb[key]) for key in ta)


def test_run_directory_and_collections_autodetect(tmp_path):
    run = tmp_path / "run"
    saes = {"layers.1.mlp__topk-k6": make_sae(hook="layers.1.mlp"),
            "layers.2__relu": make_sae("relu", hook="layers.2", seed=5)}
    for name, sae in saes.items():
        save_sae(sae, run / "saes" / name)
    (run / "config.yaml").write_text("seed: 0\n")
    loaded = load_saes(run)
    assert sorted(loaded) == sorted(saes)
    _assert_same(load_sae(run, hook="layers.2"), saes["layers.2__relu"])
    _assert_same(load_sae(run, hook="blocks.1.hook_mlp_out"), saes["layers.1.mlp__topk-k6"])
    from qwen_sae_jax.errors import UserError
    with pytest.raises(UserError, match="holds 2 SAEs; choose one"):
        load_sae(run)
    with pytest.raises(UserError, match="no SAE for 'layers.7'"):
        load_sae(run, hook="layers.7")
    # a Qwen-Scope folder of several layers
    export_saes({"a": make_sae(hook="layers.0"), "b": make_sae(hook="layers.3", seed=2)}, tmp_path / "qs",
                "qwen-scope")
    assert load_sae(tmp_path / "qs", layer=3).cfg.hook_name == "layers.3"
    assert load_sae(tmp_path / "qs" / "layer0.sae.pt").cfg.hook_name == "layers.0"
    assert sorted(load_saes(tmp_path / "qs")) == ["layers.0", "layers.3"]
