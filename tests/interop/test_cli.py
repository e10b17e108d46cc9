"""`qwen-sae export` / `qwen-sae import` on the command line."""
import json

import numpy as np
import pytest

from qwen_sae_jax import cli
from qwen_sae_jax.interop import load_sae
from qwen_sae_jax.sae import load_native_sae as load_native
from qwen_sae_jax.sae import save_sae
from tests.interop.conftest import make_inputs, make_sae


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    for name, sae in {"layers.1__topk-k6": make_sae(hook="layers.1", act_scale=0.5),
                      "layers.3__topk-k6": make_sae(hook="layers.3", seed=4)}.items():
        save_sae(sae, run / "saes" / name)
    return run


def test_export_import_roundtrip_on_the_command_line(tmp_path, run_dir, capsys):
    x = make_inputs()
    assert cli.main(["export", "--format", "qwen-scope", str(run_dir), str(tmp_path / "qs")]) == 0
    assert sorted(p.name for p in (tmp_path / "qs").iterdir()) == ["README.md", "layer1.sae.pt", "layer3.sae.pt",
                                                                   "qwen_scope.json"]
    assert "layer1.sae.pt" in capsys.readouterr().out
    # refuses to overwrite, one-line error
    assert cli.main(["export", "--format", "qwen-scope", str(run_dir), str(tmp_path / "qs")]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert cli.main(["import", str(tmp_path / "qs"), str(tmp_path / "back")]) == 0
    original = load_native(run_dir / "saes" / "layers.1__topk-k6")
    back = load_native(tmp_path / "back" / "layers.1")
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(original(x)), rtol=1e-5, atol=1e-5)
    # one member, SAELens, then back
    assert cli.main(["export", "--format", "saelens", "--hook", "layers.3", str(run_dir), str(tmp_path / "sl")]) == 0
    cfg = json.loads((tmp_path / "sl" / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
    assert cli.main(["import", str(tmp_path / "sl"), str(tmp_path / "one"), "--model", "Qwen/Qwen3-0.6B"]) == 0
    one = load_native(tmp_path / "one")
    assert one.cfg.model_name == "Qwen/Qwen3-0.6B" and one.cfg.hook_name == "layers.3"
    capsys.readouterr()
    assert cli.main(["import", str(tmp_path / "qs"), str(tmp_path / "l3"), "--layer", "3"]) == 0
    assert load_sae(tmp_path / "l3").cfg.hook_name == "layers.3"


def test_export_errors_are_one_line(tmp_path, run_dir, capsys):
    save_sae(make_sae("jumprelu", hook="layers.2"), run_dir / "saes" / "layers.2__jr")
    assert cli.main(["export", "--format", "sparsify", str(run_dir), str(tmp_path / "sp")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qwen-sae export: error: sparsify has no jumprelu SAEs") and "\n" not in err
    assert not (tmp_path / "sp").exists()
    assert cli.main(["import", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_export_src_format_picks_the_members_of_that_format(tmp_path, run_dir, capsys):
    """A folder holding a native SAE and a sparsify one: --src-format chooses which are exported."""
    mixed = tmp_path / "mixed"
    save_sae(make_sae(hook="layers.1"), mixed / "native-one")
    assert cli.main(["export", "--format", "sparsify", "--hook", "layers.3", str(run_dir), str(tmp_path / "sp")]) == 0
    (tmp_path / "sp" / "layers.3").rename(mixed / "layers.3")
    assert cli.main(["export", "--format", "saelens", "--src-format", "sparsify", str(mixed), str(tmp_path / "a")]) == 0
    cfg = json.loads((tmp_path / "a" / "cfg.json").read_text())          # one SAE: a single SAELens folder
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
    x = make_inputs()
    want = make_sae(hook="layers.3", seed=4)(x)
    np.testing.assert_allclose(np.asarray(load_sae(tmp_path / "a")(x)), np.asarray(want), rtol=1e-5, atol=1e-5)
    assert cli.main(["export", "--format", "saelens", "--src-format", "native", str(mixed), str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "cfg.json").read_text())["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    assert cli.main(["export", "--format", "saelens", "--src-format", "saelens", str(mixed), str(tmp_path / "c")]) == 2
    assert "no saelens SAE found at" in capsys.readouterr().err
