"""`qwen-sae steer` and `qwen-sae contrast`: output and one-line errors for bad input."""
import json

import pytest

from qwen_sae_jax.cli import main


def test_steer_prints_unsteered_and_steered_side_by_side(tiny_dir, run_dir, capsys):
    code = main(["steer", "--model", tiny_dir, "--sae", str(run_dir), "--hook", "layers.1", "--feature", "3",
                 "--alpha", "60", "--prompt", "How do I bake bread?", "--max-new-tokens", "6", "--width", "80"])
    out = capsys.readouterr().out
    assert code == 0
    assert "steering layers.1:3: add alpha=60, positions: all" in out
    header = next(line for line in out.splitlines() if line.startswith("unsteered"))
    assert "| steered (add alpha=60)" in header
    rows = out.split(header, 1)[1].strip().splitlines()[1:]
    assert rows and all(r[38:40] == " |" for r in rows)          # columns of (80 - 3) // 2 = 38 characters
    left = " ".join(r[:38].strip() for r in rows)
    right = " ".join(r[41:].strip() for r in rows)
    assert left != right  # a strong steer changes the random model's continuation

    code = main(["steer", "--model", tiny_dir, "--sae", str(run_dir), "--hook", "layers.0", "--feature", "1",
                 "--feature", "2", "--mode", "ablate", "--where", "prompt", "--prompt", "hi", "--max-new-tokens", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "steering layers.0:1, layers.0:2: ablate, positions: prompt" in out


@pytest.mark.parametrize("argv, message", [
    (["--hook", "layers.1", "--feature", "64", "--alpha", "1"],
     "feature 64 is out of range .* valid indices are 0..63"),
    (["--hook", "layers.1.mlp", "--feature", "3", "--alpha", "1"],
     "no SAE for hook 'layers.1.mlp'.*layers.0, layers.1"),
    (["--feature", "3", "--alpha", "1"], "several SAEs are loaded"),
    (["--feature", "layers.1.mlp:3", "--alpha", "1"], "no SAE loaded at hook layers.1.mlp"),
    (["--hook", "layers.1", "--feature", "3", "--mode", "ablate", "--alpha", "2"], "not used with --mode ablate"),
    (["--hook", "layers.1", "--feature", "3"], "--mode add needs --alpha"),
])
def test_steer_bad_input_is_one_line(tiny_dir, run_dir, capsys, argv, message):
    code = main(["steer", "--model", tiny_dir, "--sae", str(run_dir), "--prompt", "hi", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert pytest.importorskip("re").search(message, err), err


def test_contrast_ranks_and_writes_json(tiny_dir, run_dir, tmp_path, capsys):
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.jsonl"
    pos.write_text("the cat sat\n\nthe dog ran\n")
    neg.write_text("\n".join(json.dumps({"text": t}) for t in ["rain falls", "wind blows", "sun sets"]) + "\n")
    code = main(["contrast", str(pos), str(neg), "--model", tiny_dir, "--sae", str(run_dir), "--top", "3",
                 "--json", str(tmp_path / "top.json")])
    out = capsys.readouterr().out
    assert code == 0 and "2 positive vs 3 negative texts" in out
    assert "== layers.0" in out and "== layers.1" in out
    data = json.loads((tmp_path / "top.json").read_text())
    rows = data["top"]["layers.1"]["last"]["mean_diff"]
    assert len(rows) == 3 and rows[0]["mean_diff"] >= rows[1]["mean_diff"] >= rows[2]["mean_diff"]


def test_contrast_empty_or_missing_file_is_one_line(tiny_dir, run_dir, tmp_path, capsys):
    empty, good = tmp_path / "empty.txt", tmp_path / "good.txt"
    empty.write_text("")
    good.write_text("some text\n")
    for files, message in [((empty, good), "is empty"), ((good, tmp_path / "nope.txt"), "does not exist")]:
        code = main(["contrast", *map(str, files), "--model", tiny_dir, "--sae", str(run_dir)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    assert main(["contrast", str(blank), str(good), "--model", tiny_dir, "--sae", str(run_dir)]) == 2
    assert "holds no non-empty text" in capsys.readouterr().err


@pytest.mark.parametrize("raw", [False, True])
def test_steer_options_reach_generation(tiny_dir, run_dir, capsys, monkeypatch, raw):
    """--no-chat, --temperature and --seed go to both generations (defaults: a chat turn, greedy, seed 0); the
    steered one adds alpha times feature 3's decoder row in raw units (W_dec[3] / act_scale): unit-normalised,
    or as it is with --raw-direction."""
    import jax.numpy as jnp
    import numpy as np

    from qwen_sae_jax import load_sae
    from qwen_sae_jax.lm import LanguageModel

    calls = []
    monkeypatch.setattr(LanguageModel, "generate",
                        lambda self, prompts, **kw: calls.append(kw) or [f"text {len(calls)}"] * len(prompts))
    argv = ["steer", "--model", tiny_dir, "--sae", str(run_dir), "--hook", "layers.1", "--feature", "3",
            "--alpha", "2.5", "--prompt", "hi"]
    options = ["--raw-direction", "--no-chat", "--temperature", "0.7", "--seed", "3"] if raw else []
    assert main(argv + options) == 0
    out = capsys.readouterr().out
    assert ("add alpha=2.5 (raw row)" in out) == raw and "text 1" in out and "text 2" in out
    assert len(calls) == 2 and "interventions" not in calls[0]
    for kw in calls:
        assert (kw["chat"], kw["temperature"], kw["seed"]) == ((False, 0.7, 3) if raw else (True, 0.0, 0))
    (hook, fn), = calls[1]["interventions"].items()
    sae = load_sae(run_dir / "saes" / "layers.1__topk-k8")
    row = np.asarray(sae.W_dec[3]) / float(sae.act_scale)
    want = 2.5 * (row if raw else row / np.linalg.norm(row))
    assert hook == "layers.1"
    np.testing.assert_allclose(np.asarray(fn(jnp.zeros((1, 2, 32))))[0, 1], want, rtol=1e-5, atol=1e-6)


def test_contrast_position_by_and_variant(tiny_dir, run_dir, tmp_path, capsys):
    """--variant picks one of two SAEs per hook (the same ranking as a run holding only it), and the table printed
    is the --position / --by list of the JSON."""
    import shutil

    from qwen_sae_jax.sae import save_sae
    from tests.steer.conftest import random_sae

    two = tmp_path / "two"
    shutil.copytree(run_dir, two)
    only = tmp_path / "only"
    save_sae(random_sae("layers.1", seed=7, architecture="relu"), two / "saes" / "layers.1__relu")
    save_sae(random_sae("layers.1", seed=7, architecture="relu"), only / "saes" / "layers.1__relu")
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("the cat sat\nthe dog ran\n")
    neg.write_text("rain falls\nwind blows\nsun sets\n")
    common = ["contrast", str(pos), str(neg), "--model", tiny_dir, "--hook", "layers.1", "--top", "5"]
    assert main(common + ["--sae", str(two)]) == 2
    assert "several SAEs read layers.1: layers.1__relu, layers.1__topk-k8" in capsys.readouterr().err
    assert main(common + ["--sae", str(only), "--json", str(tmp_path / "only.json")]) == 0
    capsys.readouterr()
    assert main(common + ["--sae", str(two), "--variant", "relu", "--position", "mean", "--by", "rate_diff",
                          "--json", str(tmp_path / "two.json")]) == 0
    out = capsys.readouterr().out
    assert "position mean, ranked by rate_diff" in out
    top = json.loads((tmp_path / "two.json").read_text())["top"]
    assert top == json.loads((tmp_path / "only.json").read_text())["top"]
    table = out.split("== layers.1 (d_sae 64)")[1].strip().splitlines()[1:6]
    assert [int(line.split()[1]) for line in table] == [r["feature"] for r in top["layers.1"]["mean"]["rate_diff"]]
    rates = [r["rate_diff"] for r in top["layers.1"]["mean"]["rate_diff"]]
    assert rates == sorted(rates, reverse=True)
    assert top["layers.1"]["mean"]["rate_diff"] != top["layers.1"]["last"]["mean_diff"]
