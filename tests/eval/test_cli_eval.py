"""`qwen-sae eval` end to end on a run directory: tables, plots, then an export carrying the eval table."""
import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from qwen_sae_jax import cli
from qwen_sae_jax.sae import SAE, SAEConfig, save_sae

ASSETS = Path(__file__).resolve().parents[2] / "qwen_sae_jax" / "assets" / "tiny-qwen3"


def _model_with_tokenizer(folder: Path) -> str:
    """A random 2-layer Qwen3 (hidden 32) using the embedded tiny model's tokenizer (vocab 4096)."""
    import transformers

    torch.manual_seed(1)
    config = transformers.Qwen3Config(vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    transformers.Qwen3ForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (ASSETS / name).is_file():
            shutil.copy(ASSETS / name, folder / name)
    return str(folder)


def _sae(hook, seed, k=4, d_sae=64):
    rng = np.random.default_rng(seed)
    cfg = SAEConfig(architecture="topk", d_in=32, d_sae=d_sae, k=k, hook_name=hook, model_name="unused")
    f = lambda *s, scale=1.0: jnp.asarray(rng.normal(size=s) * scale, jnp.float32)  # noqa: E731
    return SAE(W_enc=f(32, d_sae, scale=0.2), b_enc=f(d_sae, scale=0.05), W_dec=f(d_sae, 32, scale=0.2),
               b_dec=f(32, scale=0.1), threshold=jnp.zeros(d_sae), act_scale=jnp.ones(()), cfg=cfg)


@pytest.mark.slow
def test_eval_run_directory_writes_tables_and_plots_then_export_uses_them(tmp_path, capsys):
    from qwen_sae_jax.config import dump_yaml
    from qwen_sae_jax.data.tokens import DataConfig
    from qwen_sae_jax.train.config import ModelConfig, TrainConfig

    model_dir = _model_with_tokenizer(tmp_path / "model")
    run = tmp_path / "run"
    saes = {"layers.0__topk-k4": _sae("layers.0", 0), "layers.0.mlp__topk-k4": _sae("layers.0.mlp", 1),
            "layers.1__topk-k4": _sae("layers.1", 2)}
    for name, sae in saes.items():
        save_sae(sae.replace(cfg=sae.cfg.replace(model_name=model_dir)), run / "saes" / name)
    cfg = TrainConfig(run_dir=str(run), model=ModelConfig(name=model_dir),
                      data=DataConfig(files=[str(ASSETS / "heldout" / "english.jsonl")], ctx_len=16))
    (run / "config.yaml").write_text(dump_yaml(cfg))

    assert cli.main(["eval", str(run), "--tokens", "64", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "the run's held-out documents (every 20th" in out
    ev = run / "eval"
    data = json.loads((ev / "eval.json").read_text())
    rows = {r["name"]: r for r in data["saes"]}
    assert set(rows) == set(saes)
    assert data["config"]["norm_outlier_factor"] == 10.0 and data["config"]["exclude_first"] is True
    for r in rows.values():
        assert r["l0_mean"] <= 4 and 0 <= r["dead_fraction"] <= 1 and np.isfinite(r["ce_spliced"])
        assert r["ce_clean"] == pytest.approx(data["ce_clean"])
    assert [j["name"] for j in data["joint"]] == ["layer 0 [topk-k4]"]
    md = (ev / "eval.md").read_text()
    assert "| 0 | mlp_out | topk-k4 |" in md and "All SAEs of a layer spliced together" in md
    csv_lines = (ev / "eval.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("name,hook,layer,site")
    for png in ("fvu_vs_layer.png", "delta_lm_loss_vs_layer.png", "l0_vs_fvu.png", "density_histograms.png"):
        assert (ev / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the export picks up the eval table and the feature densities
    assert cli.main(["export", "--format", "saelens", str(run), str(tmp_path / "hub")]) == 0
    readme = (tmp_path / "hub" / "README.md").read_text()
    assert "## Evaluation" in readme and "| 1 | resid_post | topk-k4 |" in readme
    from safetensors.numpy import load_file
    sparsity = load_file(str(tmp_path / "hub" / "blocks.1.hook_resid_post" / "sparsity.safetensors"))["sparsity"]
    assert sparsity.shape == (64,) and np.all(sparsity <= 1e-6) and sparsity.min() >= -10.0
    assert json.loads((tmp_path / "hub" / "blocks.1.hook_resid_post" / "cfg.json").read_text())[
        "metadata"]["context_size"] == 16
