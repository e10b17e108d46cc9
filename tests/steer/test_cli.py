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
    (["--hook", "layers.1", "--feature", "64", "--alpha", "1"], "feature 64 is out of range .* valid indices are 0..63"),
    (["--hook", "layers.1.mlp", "--feature", "3", "--alpha", "1"], "no SAE for hook 'layers.1.mlp'.*layers.0, layers.1"),
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
