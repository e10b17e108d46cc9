"""Cross-check with the real SAELens and sparsify packages, both directions (test dependencies of the
project, so these run in CI). See docs/interop.md."""
import numpy as np
import pytest
import sae_lens
import sparsify
import torch

from qwen_sae_jax.interop import export_saes, load_sae
from tests.interop.conftest import make_inputs, make_sae

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "jumprelu", "relu"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saelens_loads_our_export(tmp_path, architecture, apply_b_dec):
    sae = make_sae(architecture, apply_b_dec, act_scale=0.7)
    export_saes({"s": sae}, tmp_path / "out", "saelens")
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "out"))
    x = make_inputs()
    with torch.no_grad():
        z = theirs.encode(torch.from_numpy(x))
        np.testing.assert_allclose(z.numpy(), np.asarray(sae.encode(x)), **TOL)
        np.testing.assert_allclose(theirs.decode(z).numpy(), np.asarray(sae(x)), **TOL)
    assert theirs.cfg.metadata.hook_name == "blocks.2.hook_resid_post"


@pytest.mark.parametrize("kind", ["topk-rescaled", "jumprelu", "standard"])
def test_we_load_saelens_saves(tmp_path, kind):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    common = dict(d_in=16, d_sae=48, apply_b_dec_to_input=True)
    if kind == "topk-rescaled":
        theirs = TopKSAE(TopKSAEConfig(k=6, rescale_acts_by_decoder_norm=True, **common))
    elif kind == "jumprelu":
        theirs = JumpReLUSAE(JumpReLUSAEConfig(**common))
    else:
        theirs = StandardSAE(StandardSAEConfig(**common))
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (0.1 if p.ndim == 1 else 0.0))
        if kind == "jumprelu":
            theirs.threshold.copy_(torch.rand(48) * 0.3)
    theirs.save_model(str(tmp_path / "sl"))
    ours = load_sae(tmp_path / "sl")
    x = make_inputs()
    with torch.no_grad():
        z = theirs.encode(torch.from_numpy(x))
        np.testing.assert_allclose(np.asarray(ours.encode(x)), z.numpy(), **TOL)
        np.testing.assert_allclose(np.asarray(ours(x)), theirs.decode(z).numpy(), **TOL)


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_sparsify_roundtrip_with_the_real_package(tmp_path, apply_b_dec):
    sae = make_sae("topk", apply_b_dec, act_scale=1.9, hook="layers.1.mlp")
    export_saes({"s": sae}, tmp_path / "repo", "sparsify")
    theirs = sparsify.SparseCoder.load_from_disk(tmp_path / "repo" / "layers.1.mlp")
    x = make_inputs()
    with torch.no_grad():
        out = theirs(torch.from_numpy(x))
    np.testing.assert_allclose(out.sae_out.numpy(), np.asarray(sae(x)), **TOL)
    z = np.asarray(sae.encode(x))
    got = np.take_along_axis(z, out.latent_indices.numpy(), axis=-1)
    np.testing.assert_allclose(out.latent_acts.numpy(), got, **TOL)
    # and back: their save_to_disk, our reader
    theirs.save_to_disk(tmp_path / "again")
    np.testing.assert_allclose(np.asarray(load_sae(tmp_path / "again")(x)), np.asarray(sae(x)), **TOL)
