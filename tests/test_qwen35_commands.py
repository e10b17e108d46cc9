"""Every `qwen-sae` command on the embedded hybrid `tiny-qwen3.5` (Gated DeltaNet on layers 0 and 2, full attention
on 1 and 3), through the real CLI at tiny budgets. One training run (`run`, trained once for the module) holds SAEs
at a Gated DeltaNet mixer (layers.0.linear_attn), a full-attention mixer (layers.1.self_attn), an MLP of a linear
layer (layers.0.mlp) and a residual stream (layers.1); every other command reads it."""
import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from qwen_sae_jax.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "tiny-qwen3.5.yaml"
HOOKS = ["blocks.0.hook_attn_out", "blocks.1.hook_attn_out", "layers.0.mlp", "layers.1"]
FOLDERS = ["layers.0.linear_attn__topk-k32", "layers.0.mlp__topk-k32", "layers.1.self_attn__topk-k32",
           "layers.1__topk-k32"]
# a few training steps of small batches (the config's SAE settings, its data, its model)
TINY = ["train.total_tokens=1024", "train.batch_size=512", "buffer.size=1024", "buffer.init_sample=256",
        "eval.tokens=256", "data.ctx_len=32", "data.batch_size=8", "checkpoint.async_save=false", "mesh.data=1"]
HELDOUT = REPO / "qwen_sae_jax" / "assets" / "tiny-qwen3.5" / "heldout"


def _cli(*argv) -> tuple[int, str]:
    """``qwen-sae ARGV``: (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str]:
    """(run directory, printed output) of `qwen-sae train configs/tiny-qwen3.5.yaml` on four hooks, two steps."""
    run_dir = tmp_path_factory.mktemp("qwen35") / "run"
    code, out = _cli("train", CONFIG, f"run_dir={run_dir}", f"hooks=[{','.join(HOOKS)}]", *TINY)
    assert code == 0, out
    return run_dir, out


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    """en.txt / zh.txt: 8 held-out English and Chinese texts, one per line; same.txt: one text 5 times."""
    d = tmp_path_factory.mktemp("qwen35-texts")
    for lang, src in (("en", "english"), ("zh", "chinese")):
        lines = [json.loads(line)["text"].replace("\n", " ")[:200] for line in
                 (HELDOUT / f"{src}.jsonl").read_text().splitlines()[:8]]
        (d / f"{lang}.txt").write_text("\n".join(lines) + "\n")
    (d / "same.txt").write_text("The cat sat on the mat.\n" * 5)
    return d


def _table_row(out: str, name: str) -> list[str]:
    return next(line.split() for line in out.splitlines() if line.startswith(name + " "))


def test_train_resolves_both_mixers_and_its_table_names_each_layers_kind(run):
    run_dir, out = run
    assert sorted(p.name for p in (run_dir / "saes").iterdir()) == FOLDERS
    assert "kind" in out.splitlines()[next(i for i, line in enumerate(out.splitlines()) if "FVU" in line)]
    kinds = {name: _table_row(out, name)[1] for name in FOLDERS}
    assert kinds == {"layers.0.linear_attn__topk-k32": "linear", "layers.0.mlp__topk-k32": "linear",
                     "layers.1.self_attn__topk-k32": "full", "layers.1__topk-k32": "full"}
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = summary["saes"] if "saes" in summary else summary
    by_hook = {r["hook"]: r["layer_kind"] for r in (rows if isinstance(rows, list) else rows.values())}
    assert by_hook == {"layers.0.linear_attn": "linear", "layers.0.mlp": "linear", "layers.1.self_attn": "full",
                       "layers.1": "full"}


def test_eval_splices_both_mixers_and_names_the_layer_kind(run, tmp_path):
    from qwen_sae_jax.eval.plots import layer_labels

    run_dir, _ = run
    out_dir = tmp_path / "eval"
    code, out = _cli("eval", run_dir, "--hook", "blocks.0.hook_attn_out", "--hook", "layers.1.self_attn",
                     "--tokens", "128", "--batch-size", "2", "--ctx-len", "32", "--no-plots", "--out", out_dir)
    assert code == 0
    assert "| 0 | linear | attn_out | topk-k32 |" in out and "| 1 | full | attn_out | topk-k32 |" in out
    data = json.loads((out_dir / "eval.json").read_text())
    rows = {r["hook"]: r for r in data["saes"]}
    assert {h: r["layer_kind"] for h, r in rows.items()} == {"layers.0.linear_attn": "linear",
                                                             "layers.1.self_attn": "full"}
    for r in rows.values():        # a two-step SAE spliced in: a finite, worse loss and a positive KL
        assert np.isfinite(r["ce_spliced"]) and r["ce_spliced"] > r["ce_clean"] and r["kl_spliced"] > 0
    assert "layer_kind" in (out_dir / "eval.csv").read_text().splitlines()[0].split(",")
    assert layer_labels(data["saes"]) == {0: "0\nlinear", 1: "1\nfull"}      # the plots' layer ticks


def _columns(out: str, width: int = 80) -> tuple[str, str]:
    """The unsteered and steered texts of `qwen-sae steer`'s side-by-side output."""
    header = next(line for line in out.splitlines() if line.startswith("unsteered"))
    rows = out.split(header, 1)[1].strip().splitlines()[1:]
    half = (width - 3) // 2
    return " ".join(r[:half].strip() for r in rows), " ".join(r[half + 3:].strip() for r in rows)


def test_steer_at_a_gated_deltanet_mixer_changes_the_generation(run):
    run_dir, _ = run
    code, out = _cli("steer", "--sae", run_dir, "--hook", "blocks.0.hook_attn_out", "--feature", "3", "--alpha", "300",
                     "--prompt", "How do I bake bread?", "--max-new-tokens", "5", "--width", "80")
    assert code == 0 and "steering layers.0.linear_attn:3: add alpha=300" in out
    unsteered, steered = _columns(out)
    assert unsteered and unsteered != steered


def test_refusal_study_on_the_residual_sae(run, tmp_path):
    run_dir, _ = run
    cfg = {"saes": [str(run_dir)], "hooks": ["layers.1"], "out_dir": str(tmp_path / "refusal"),
           "prompts": {"max_prompts": 6, "rank_fraction": 0.5}, "top_features": 1, "alphas": [1],
           "random_controls": 0, "reverse_ablate": [], "reverse_alphas": [], "max_new_tokens": 6,
           "batch_size": 6, "examples": 1}
    path = tmp_path / "refusal.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code, out = _cli("refusal", path)
    assert code == 0 and "model tiny-qwen3.5; hooks layers.1" in out
    report = json.loads((tmp_path / "refusal" / "report.json").read_text())
    assert report["prompts"] == {"rank_harmful": 3, "rank_harmless": 3, "eval_harmful": 3, "eval_harmless": 3}
    baseline = report["baseline"]
    # the instruction-tuned model refuses more of the harmful prompts; steering at alpha 1 x the norm changes the text
    assert baseline["harmful"]["refusal_rate"] > baseline["harmless"]["refusal_rate"]
    assert [t["hook"] for t in report["per_hook"]["layers.1"]["top"]][:1] == ["layers.1"]
    assert report["verdict"]["best"]["ce"] != pytest.approx(baseline["harmless"]["ce"])
    assert (tmp_path / "refusal" / "report.md").is_file()


def test_contrast_ranks_gated_deltanet_features(run, texts, tmp_path):
    run_dir, _ = run
    code, out = _cli("contrast", texts / "zh.txt", texts / "en.txt", "--sae", run_dir, "--hook",
                     "layers.0.linear_attn", "--top", "3", "--json", tmp_path / "top.json")
    assert code == 0 and "== layers.0.linear_attn" in out
    top = json.loads((tmp_path / "top.json").read_text())["top"]
    rows = top["layers.0.linear_attn"]["last"]["mean_diff"]
    assert len(rows) == 3 and rows[0]["mean_diff"] >= rows[1]["mean_diff"] >= rows[2]["mean_diff"]


def test_dashboard_of_the_mixer_saes(run, tmp_path):
    run_dir, _ = run
    out_dir = tmp_path / "dash"
    code, _ = _cli("dashboard", run_dir, "--out", out_dir, "--saes", "layers.*_attn*", "--files",
                   HELDOUT / "english.jsonl", "--max-tokens", "256", "--ctx-len", "32", "--batch-size", "4",
                   "--n-examples", "2", "--lens-k", "3")
    assert code == 0
    index = json.loads((out_dir / "data" / "index.json").read_text())
    assert index["model"] == "tiny-qwen3.5" and index["n_tokens"] == 256
    assert [s["hook"] for s in index["saes"]] == ["layers.0.linear_attn", "layers.1.self_attn"]
    for sae in index["saes"]:          # every SAE got a page and a firing-density histogram of the 256 tokens
        assert (out_dir / sae["page"]).is_file() and sum(sae["density_hist"]["counts"]) > 0


def test_classify_chinese_from_english_at_a_gated_deltanet_mixer(run, texts, tmp_path):
    run_dir, _ = run
    code, out = _cli("classify", texts / "zh.txt", texts / "en.txt", "--sae", run_dir, "--hook",
                     "layers.0.linear_attn", "--max-features", "3", "--test-fraction", "0.25", "--json",
                     tmp_path / "cls.json")
    assert code == 0 and "top1-diff" in out
    result = json.loads((tmp_path / "cls.json").read_text())
    assert result["hook"] == "layers.0.linear_attn" and result["n_train"] == [6, 6] and result["n_test"] == [2, 2]
    # the chosen feature fires on more Chinese than English training texts (top1-diff), and the train split is fit
    assert result["rate_pos"][0] > result["rate_neg"][0] and result["train"]["accuracy"] >= 0.75, result


def test_redundancy_at_a_full_attention_mixer(run, texts, tmp_path):
    run_dir, _ = run
    code, out = _cli("redundancy", texts / "same.txt", texts / "en.txt", "--sae", run_dir, "--hook",
                     "layers.1.self_attn", "--json", tmp_path / "red.json")
    assert code == 0 and "footprint overlap" in out
    sets = json.loads((tmp_path / "red.json").read_text())["sets"]
    same, en = sets[str(texts / "same.txt")], sets[str(texts / "en.txt")]
    assert same["curve"] == [1.0] * 5 and same["redundancy"] == pytest.approx(5 / same["footprint"])
    assert en["n_texts"] == 8 and en["curve"][-1] == pytest.approx(1.0)


def test_capture_resolves_the_mixer_alias_per_layer(tmp_path):
    from qwen_sae_jax.lm import load_model

    out_dir = tmp_path / "acts"
    code, _ = _cli("capture", "--model", "tiny-qwen3.5", "--hooks", "blocks.*.hook_attn_out", "--text",
                   "The cat sat on the mat.", "--out", out_dir)
    assert code == 0
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["attention_mask.npy", "input_ids.npy", "layers.0.linear_attn.npy", "layers.1.self_attn.npy",
                     "layers.2.linear_attn.npy", "layers.3.self_attn.npy"]
    ids = np.load(out_dir / "input_ids.npy")
    want = load_model("tiny-qwen3.5").capture(ids, ["layers.0.linear_attn"])["layers.0.linear_attn"]
    np.testing.assert_allclose(np.load(out_dir / "layers.0.linear_attn.npy"), np.asarray(want), atol=1e-5)


def test_export_and_import_round_trip_every_sae(run, tmp_path):
    from qwen_sae_jax.sae import load_native_sae

    run_dir, _ = run
    code, _ = _cli("export", "--format", "saelens", run_dir, tmp_path / "saelens")
    assert code == 0
    code, _ = _cli("import", tmp_path / "saelens", tmp_path / "back")
    assert code == 0
    back = {load_native_sae(p).cfg.hook_name: load_native_sae(p) for p in (tmp_path / "back").iterdir()}
    assert sorted(back) == ["layers.0.linear_attn", "layers.0.mlp", "layers.1", "layers.1.self_attn"]
    x = np.random.default_rng(0).normal(size=(5, 192)).astype(np.float32)
    for folder in FOLDERS:
        original = load_native_sae(run_dir / "saes" / folder)
        again = back[original.cfg.hook_name]
        assert again.cfg.model_name == "tiny-qwen3.5"
        np.testing.assert_allclose(np.asarray(again(x)), np.asarray(original(x)), rtol=1e-5, atol=1e-5)


def test_demo_on_tiny_qwen35(tmp_path):
    """`demo --model tiny-qwen3.5` runs configs/tiny-qwen3.5.yaml (its twelve hooks: tests/train/test_configs.py);
    here on the fixture's four hooks and budget, so the programs compiled for the fixture are reused."""
    run_dir = tmp_path / "demo"
    code, out = _cli("demo", "--model", "tiny-qwen3.5", "--run-dir", run_dir, f"hooks=[{','.join(HOOKS)}]", *TINY)
    assert code == 0
    assert f"on {', '.join(HOOKS)} of the embedded tiny Qwen3.5 (Gated DeltaNet + full attention)" in out
    assert "tiny Qwen3," not in out and "kind = the layer's token mixer" in out
    assert sorted(p.name for p in (run_dir / "saes").iterdir()) == FOLDERS
    assert [_table_row(out, name)[1] for name in FOLDERS] == ["linear", "linear", "full", "full"]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["name"] == "tiny-qwen3.5"


def test_demo_model_option_is_documented_and_checked(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])
    assert exit_.value.code == 0
    assert re.search(r"--model \{tiny,tiny-qwen3.5\}", capsys.readouterr().out)
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--model", "unknown"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'tiny', 'tiny-qwen3.5'" in err
