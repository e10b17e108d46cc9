"""`qwen-sae eval` end to end: a run directory (tables, plots, then an export carrying the eval table), an SAE in
every format outside a run directory (native, SAELens, sparsify, Qwen-Scope with --k), and the position options."""
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


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _model_with_tokenizer(tmp_path_factory.mktemp("eval-model") / "model")


ENGLISH = str(ASSETS / "heldout" / "english.jsonl")
SMALL = ("--tokens", "64", "--batch-size", "2", "--ctx-len", "16", "--no-plots")


def _eval(src, *args, data=ENGLISH) -> dict:
    """`qwen-sae eval SRC --data DATA` on 2 x 2 x 16 tokens; the eval.json it wrote (default --out)."""
    assert cli.main(["eval", str(src), "--data", data, *SMALL, *args]) == 0
    out = Path(args[args.index("--out") + 1]) if "--out" in args else Path(f"{src}-eval")
    return json.loads((out / "eval.json").read_text())


def _sae(hook, seed, k=4, d_sae=64):
    rng = np.random.default_rng(seed)
    cfg = SAEConfig(architecture="topk", d_in=32, d_sae=d_sae, k=k, hook_name=hook, model_name="unused")
    f = lambda *s, scale=1.0: jnp.asarray(rng.normal(size=s) * scale, jnp.float32)  # noqa: E731
    return SAE(W_enc=f(32, d_sae, scale=0.2), b_enc=f(d_sae, scale=0.05), W_dec=f(d_sae, 32, scale=0.2),
               b_dec=f(32, scale=0.1), threshold=jnp.zeros(d_sae), act_scale=jnp.ones(()), cfg=cfg)


@pytest.mark.slow
def test_eval_run_directory_writes_tables_and_plots_then_export_uses_them(model_dir, tmp_path, capsys):
    from qwen_sae_jax.config import dump_yaml
    from qwen_sae_jax.data.tokens import DataConfig
    from qwen_sae_jax.train.config import ModelConfig, TrainConfig

    run = tmp_path / "run"
    saes = {"layers.0__topk-k4": _sae("layers.0", 0), "layers.0.mlp__topk-k4": _sae("layers.0.mlp", 1),
            "layers.1__topk-k4": _sae("layers.1", 2)}
    for name, sae in saes.items():
        save_sae(sae.replace(cfg=sae.cfg.replace(model_name=model_dir)), run / "saes" / name)
    cfg = TrainConfig(run_dir=str(run), model=ModelConfig(name=model_dir),
                      data=DataConfig(files=[ENGLISH], ctx_len=16))
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
    assert "| 0 | full | mlp_out | topk-k4 |" in md and "All SAEs of a layer spliced together" in md
    csv_lines = (ev / "eval.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("name,hook,layer,site")
    for png in ("fvu_vs_layer.png", "delta_lm_loss_vs_layer.png", "l0_vs_fvu.png", "density_histograms.png"):
        assert (ev / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the export picks up the eval table and the feature densities
    assert cli.main(["export", "--format", "saelens", str(run), str(tmp_path / "hub")]) == 0
    readme = (tmp_path / "hub" / "README.md").read_text()
    assert "## Evaluation" in readme and "| 1 | full | resid_post | topk-k4 |" in readme
    from safetensors.numpy import load_file
    sparsity = load_file(str(tmp_path / "hub" / "blocks.1.hook_resid_post" / "sparsity.safetensors"))["sparsity"]
    assert sparsity.shape == (64,) and np.all(sparsity <= 1e-6) and sparsity.min() >= -10.0
    assert json.loads((tmp_path / "hub" / "blocks.1.hook_resid_post" / "cfg.json").read_text())[
        "metadata"]["context_size"] == 16

    # the same from a copy of the run without eval/, naming the eval files kept elsewhere (--eval, --density)
    bare, kept = tmp_path / "bare", tmp_path / "kept-eval"
    shutil.copytree(run / "saes", bare / "saes")
    shutil.copy(run / "config.yaml", bare / "config.yaml")
    shutil.copytree(ev, kept)
    assert cli.main(["export", "--format", "saelens", str(bare), str(tmp_path / "plain")]) == 0
    assert "## Evaluation" not in (tmp_path / "plain" / "README.md").read_text()
    assert not (tmp_path / "plain" / "blocks.1.hook_resid_post" / "sparsity.safetensors").exists()
    assert cli.main(["export", "--format", "saelens", str(bare), str(tmp_path / "named"), "--eval", str(kept),
                     "--density", str(kept / "feature_density.safetensors")]) == 0
    assert (tmp_path / "named" / "README.md").read_text() == readme
    named = load_file(str(tmp_path / "named" / "blocks.1.hook_resid_post" / "sparsity.safetensors"))["sparsity"]
    np.testing.assert_array_equal(named, sparsity)


METRICS = ("fvu", "cossim", "l0_mean", "dead_fraction", "ce_spliced", "ce_loss_recovered", "kl_spliced")


@pytest.mark.slow   # five evaluations
def test_eval_of_one_sae_in_every_format_outside_a_run_directory(model_dir, tmp_path, capsys):
    """The same TopK SAE as a native folder, SAELens folder, sparsify folder and Qwen-Scope file: `qwen-sae eval
    --model --data` gives the native numbers for each; the Qwen-Scope file states no k, so it needs --k."""
    from qwen_sae_jax.interop import export_saes

    sae = _sae("layers.1", 2)
    save_sae(sae, tmp_path / "native")
    for fmt in ("saelens", "sparsify", "qwen-scope"):
        export_saes({"layers.1": sae}, tmp_path / fmt, fmt)
    scope = tmp_path / "scope-file"          # a bare layer{N}.sae.pt: no sidecar, README or L0_<k> folder name
    scope.mkdir()
    shutil.copy(tmp_path / "qwen-scope" / "layer1.sae.pt", scope / "layer1.sae.pt")

    want = _eval(tmp_path / "native", "--model", model_dir)
    assert (tmp_path / "native-eval" / "eval.md").is_file()        # default --out: SAE_PATH-eval beside it
    (row,) = want["saes"]
    assert row["name"] == "native" and row["hook"] == "layers.1" and 0 < row["l0_mean"] <= 4
    assert cli.main(["eval", str(scope / "layer1.sae.pt"), "--model", model_dir, "--data", ENGLISH, *SMALL]) == 2
    assert "pass k= (--k K)" in capsys.readouterr().err
    for src, extra in ((tmp_path / "saelens", ()), (tmp_path / "sparsify", ("--hook", "layers.1")),
                       (scope / "layer1.sae.pt", ("--k", "4", "--hook", "layers.1"))):
        got = _eval(src, "--model", model_dir, "--out", str(tmp_path / f"{src.name}-out"), *extra)
        assert got["n_tokens"] == want["n_tokens"] and got["ce_clean"] == pytest.approx(want["ce_clean"], rel=1e-6)
        (other,) = got["saes"]
        assert other["hook"] == "layers.1", src
        for key in METRICS:
            assert other[key] == pytest.approx(row[key], rel=1e-4, abs=1e-6), (src, key)
    # the SAEs name no model that exists here: --model is required then
    assert cli.main(["eval", str(tmp_path / "native"), "--data", ENGLISH, *SMALL, "--out", str(tmp_path / "x")]) == 2
    assert "unused" in capsys.readouterr().err


@pytest.mark.slow   # three evaluations
def test_eval_position_and_joint_options(model_dir, tmp_path):
    """--include-special / --include-first count those positions again, --outlier-factor leaves out positions
    above factor x the median norm, --no-joint drops the layer-wide splice; defaults outside a run directory:
    special and first positions left out, no outlier filter, joint on."""
    from qwen_sae_jax.data.tokens import special_token_ids
    from qwen_sae_jax.eval.evaluate import EvalConfig, heldout_batches
    from qwen_sae_jax.lm import load_model

    bundle = tmp_path / "bundle"             # a plain folder of native SAEs (no config.yaml)
    for name, hook, seed in (("layers.0__topk-k4", "layers.0", 0), ("layers.0.mlp__topk-k4", "layers.0.mlp", 1)):
        sae = _sae(hook, seed)
        save_sae(sae.replace(cfg=sae.cfg.replace(model_name=model_dir)), bundle / name)
    chat = str(ASSETS / "heldout" / "chat.jsonl")                  # conversations: <|im_start|> ... <|im_end|>
    tokenizer = load_model(model_dir).tokenizer
    batches = heldout_batches(tokenizer, [chat], EvalConfig(n_tokens=64, batch_size=2, ctx_len=16))
    ids = np.concatenate(batches)                                     # [4, 16]: what the CLI evaluates
    special = np.isin(ids, list(special_token_ids(tokenizer)))
    assert special[:, 1:].any() and special[:, 0].any() and not special[:, 0].all()
    left_out = special.copy()
    left_out[:, 0] = True

    default = _eval(bundle, "--out", str(tmp_path / "default"), data=chat)
    assert default["config"]["exclude_special"] and default["config"]["exclude_first"]
    assert default["config"]["norm_outlier_factor"] is None and default["config"]["joint"]
    assert default["n_tokens"] == int((~left_out).sum())
    assert [j["name"] for j in default["joint"]] == ["layer 0 [topk-k4]"]

    everything = _eval(bundle, "--include-special", "--include-first", "--no-joint", "--out", str(tmp_path / "all"),
                       data=chat)
    assert not everything["config"]["exclude_special"] and not everything["config"]["exclude_first"]
    assert everything["n_tokens"] == ids.size and everything["joint"] == []
    assert {r["name"] for r in everything["saes"]} == {r["name"] for r in default["saes"]}

    outliers = _eval(bundle, "--outlier-factor", "1.0", "--out", str(tmp_path / "outliers"), data=chat)
    assert outliers["config"]["norm_outlier_factor"] == 1.0
    assert 0 < outliers["n_tokens"] < default["n_tokens"]            # above the median at either hook: dropped
