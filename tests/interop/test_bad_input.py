"""Bad files give one clear UserError; nothing in a .pt is executed; nothing is half-written."""
import json
import subprocess
import sys

import pytest
import torch

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.interop import export_saes, load_sae
from qwen_sae_jax.sae import save_sae
from tests.interop.conftest import make_sae


@pytest.fixture
def saelens_dir(tmp_path):
    export_saes({"s": make_sae("jumprelu")}, tmp_path / "sl", "saelens")
    return tmp_path / "sl"


def test_truncated_and_corrupt_safetensors(tmp_path, saelens_dir):
    weights = saelens_dir / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_sae(saelens_dir)
    save_sae(make_sae(), tmp_path / "native")
    (tmp_path / "native" / "sae.safetensors").write_bytes(b"\x07" * 64)
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_sae(tmp_path / "native")
    export_saes({"s": make_sae(hook="layers.1")}, tmp_path / "qs", "qwen-scope")
    pt = tmp_path / "qs" / "layer1.sae.pt"
    pt.write_bytes(pt.read_bytes()[: len(pt.read_bytes()) // 2])
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        load_sae(pt)


def test_cfg_tensor_shape_mismatch(saelens_dir, tmp_path):
    cfg = json.loads((saelens_dir / "cfg.json").read_text())
    cfg["d_sae"] = 40
    (saelens_dir / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"W_enc.*shape \(16, 48\), expected \(16, 40\)"):
        load_sae(saelens_dir)
    export_saes({"s": make_sae(hook="layers.2.mlp")}, tmp_path / "sp", "sparsify")
    folder = tmp_path / "sp" / "layers.2.mlp"
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["d_in"] = 17
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="encoder.weight.*expected"):
        load_sae(folder)
    # a Qwen-Scope file whose W_dec is stored the SAELens way round
    p = {"W_enc": torch.zeros(48, 16), "W_dec": torch.zeros(48, 16), "b_enc": torch.zeros(48),
         "b_dec": torch.zeros(16)}
    (tmp_path / "q-L0_8").mkdir()
    torch.save(p, tmp_path / "q-L0_8" / "layer0.sae.pt")
    with pytest.raises(UserError, match=r"W_dec.*\(48, 16\), expected \(16, 48\)"):
        load_sae(tmp_path / "q-L0_8" / "layer0.sae.pt")


def test_unknown_architecture_and_format(saelens_dir):
    cfg = json.loads((saelens_dir / "cfg.json").read_text())
    cfg["architecture"] = "gated"
    (saelens_dir / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="unsupported SAELens architecture 'gated'; supported"):
        load_sae(saelens_dir)
    with pytest.raises(UserError, match="unknown SAE format 'saelen'.*did you mean 'saelens'"):
        load_sae(saelens_dir, format="saelen")
    with pytest.raises(UserError, match="unknown export format"):
        export_saes({"s": make_sae()}, saelens_dir.parent / "x", "onnx")


class _CreatesFile:
    """Unpickling this calls open(path, "w"): a stand-in for arbitrary code in a malicious checkpoint."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pt_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "evil-L0_4"
    folder.mkdir()
    torch.save({"W_enc": torch.zeros(8, 4), "payload": _CreatesFile(str(marker))}, folder / "layer0.sae.pt")
    assert not marker.exists()
    with pytest.raises(UserError, match="refused to load .*weights_only=True"):
        load_sae(folder / "layer0.sae.pt")
    assert not marker.exists()
    with pytest.raises(UserError, match="refused"):
        load_sae(folder, layer=0)
    assert not marker.exists()


def test_existing_destination_needs_force_and_failures_leave_nothing(tmp_path):
    dst = tmp_path / "out"
    export_saes({"s": make_sae()}, dst, "saelens")
    before = (dst / "sae_weights.safetensors").read_bytes()
    with pytest.raises(UserError, match="already exists; pass --force"):
        export_saes({"s": make_sae(seed=9)}, dst, "saelens")
    assert (dst / "sae_weights.safetensors").read_bytes() == before
    # a failing forced export keeps the old folder untouched and leaves no temporary folder
    with pytest.raises(UserError):
        export_saes({"s": make_sae("jumprelu", seed=9)}, dst, "sparsify", force=True)
    assert (dst / "sae_weights.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    export_saes({"s": make_sae(seed=9)}, dst, "saelens", force=True)
    assert (dst / "sae_weights.safetensors").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_missing_k_for_qwen_scope_release_without_metadata(tmp_path):
    folder = tmp_path / "release"
    folder.mkdir()
    torch.save({"W_enc": torch.randn(48, 16), "W_dec": torch.randn(16, 48), "b_enc": torch.zeros(48),
                "b_dec": torch.zeros(16)}, folder / "layer7.sae.pt")
    with pytest.raises(UserError, match="pass k="):
        load_sae(folder / "layer7.sae.pt")
    assert load_sae(folder / "layer7.sae.pt", k=5).cfg.k == 5
    (folder / "README.md").write_text("---\nbase_model: Qwen/Qwen3-1.7B-Base\n---\n| Top-K | 12 |\n")
    sae = load_sae(folder, layer=7)
    assert (sae.cfg.k, sae.cfg.model_name, sae.cfg.hook_name) == (12, "Qwen/Qwen3-1.7B-Base", "layers.7")
    assert not sae.cfg.apply_b_dec_to_input
    # a release folder named like Qwen's (…-L0_<k>) states k when no README does; a README row comes first,
    # and k= overrides both
    named = tmp_path / "SAE-Res-Qwen3-1.7B-Base-W48-L0_9"
    named.mkdir()
    (named / "layer7.sae.pt").write_bytes((folder / "layer7.sae.pt").read_bytes())
    assert load_sae(named / "layer7.sae.pt").cfg.k == 9 and load_sae(named, layer=7, k=3).cfg.k == 3
    (named / "README.md").write_text((folder / "README.md").read_text())
    assert load_sae(named / "layer7.sae.pt").cfg.k == 12


def test_reading_safetensors_formats_does_not_import_torch(tmp_path):
    export_saes({"s": make_sae()}, tmp_path / "sl", "saelens")
    export_saes({"s": make_sae(hook="layers.1")}, tmp_path / "sp", "sparsify")
    save_sae(make_sae(), tmp_path / "nat")
    code = ("import sys; from qwen_sae_jax.interop import load_sae, export_saes; "
            f"[load_sae(p) for p in ({str(tmp_path / 'sl')!r}, {str(tmp_path / 'sp')!r}, {str(tmp_path / 'nat')!r})]; "
            "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
