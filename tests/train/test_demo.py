"""`qwen-sae demo` (what `make demo` runs) on the embedded tiny model, shortened by overrides: it prints the
per-SAE table and leaves loadable SAEs for every layer x site."""
import pytest

from qwen_sae_jax import load_sae
from qwen_sae_jax.cli import main

pytestmark = pytest.mark.slow


def test_demo_prints_the_table_and_leaves_the_saes(tmp_path, capsys):
    run_dir = tmp_path / "demo"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("run_dir: old\n")     # a previous demo run there is replaced
    code = main(["demo", "--run-dir", str(run_dir), "train.total_tokens=2048", "buffer.size=2048",
                 "buffer.init_sample=512", "eval.tokens=1024", "log.every=1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "replacing the previous demo run" in out
    assert "FVU" in out and "expl.var" in out and "dead %" in out and "done in" in out
    folders = sorted(p.name for p in (run_dir / "saes").iterdir())
    assert len(folders) == 12 and "layers.2.self_attn__topk-k32" in folders and "layers.3__topk-k32" in folders
    for name in folders:
        assert name in out
    sae = load_sae(run_dir / "saes" / "layers.1.mlp__topk-k32")
    assert sae.cfg.model_name == "tiny" and sae.cfg.d_sae == 1536 and sae.cfg.k == 32
