"""`qwen-sae classify` and `qwen-sae redundancy` end to end on the tiny model, and their bad input."""
import dataclasses
import json

import pytest

from qwen_sae_jax.cli import main
from qwen_sae_jax.errors import UserError


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("texts")
    english = ["the cat sat on a mat", "seven quick foxes jumped", "lazy dogs near the river bank",
               "the river bank while the cat sat", "quick foxes over lazy dogs", "a mat near the river"]
    chinese = ["猫 狗 河 山 水", "山 水 猫", "河 山 狗 狗", "水 水 猫 河", "狗 山 河", "猫 猫 水 山"]
    (d / "en.txt").write_text("\n".join(english) + "\n")
    (d / "zh.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in chinese))
    (d / "same.txt").write_text("the cat sat on a mat\n" * 5)
    (d / "empty.txt").write_text("\n\n")
    return d


def test_classify_end_to_end(run_dir, text_files, tmp_path, capsys, tiny_lm):
    from qwen_sae_jax.analysis.classifier import fit_feature_classifier
    from qwen_sae_jax.analysis.corpus import read_texts
    from qwen_sae_jax.analysis.footprint import text_footprints
    from qwen_sae_jax.interop.load import load_sae

    out = tmp_path / "cls.json"
    code = main(["classify", str(text_files / "zh.jsonl"), str(text_files / "en.txt"), "--sae", str(run_dir),
                 "--hook", "layers.0.mlp", "--max-features", "3", "--test-fraction", "0.34", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "held out" in printed and "top1-diff" in printed
    result = json.loads(out.read_text())
    assert result["hook"] == "layers.0.mlp" and result["selection"] == "top1-diff"
    assert result["n_train"] == [4, 4] and result["n_test"] == [2, 2]
    # the command equals the library on the same footprints
    sae = load_sae(run_dir, hook="layers.0.mlp")
    pos = text_footprints(tiny_lm, sae, read_texts(str(text_files / "zh.jsonl")))
    neg = text_footprints(tiny_lm, sae, read_texts(str(text_files / "en.txt")))
    ref = fit_feature_classifier(pos.fired, neg.fired, max_features=3, test_fraction=0.34)
    assert result["features"] == ref.features and result["test"] == ref.test


def test_redundancy_end_to_end(run_dir, text_files, tmp_path, capsys):
    out, plot = tmp_path / "red.json", tmp_path / "curves.png"
    code = main(["redundancy", str(text_files / "same.txt"), str(text_files / "en.txt"), "--sae", str(run_dir),
                 "--hook", "layers.1__topk", "--json", str(out), "--plot", str(plot)])
    assert code == 0
    assert "footprint overlap" in capsys.readouterr().out
    result = json.loads(out.read_text())
    same, en = result["sets"][str(text_files / "same.txt")], result["sets"][str(text_files / "en.txt")]
    # identical texts: identical footprints, a flat coverage curve, R = N / |F(D)|
    assert same["curve"] == [1.0] * 5 and same["redundancy"] == pytest.approx(5 / same["footprint"])
    assert en["n_texts"] == 6 and en["curve"][-1] == pytest.approx(1.0)
    assert result["overlap"][str(text_files / "en.txt")][str(text_files / "en.txt")] == 1.0
    # "the cat sat on a mat" is also the first English text, so its footprint lies inside the English one
    assert result["overlap"][str(text_files / "same.txt")][str(text_files / "en.txt")] == 1.0
    assert plot.stat().st_size > 1000

    code = main(["redundancy", str(text_files / "en.txt"), str(text_files / "same.txt"), "--sae", str(run_dir),
                 "--hook", "layers.1", "--n-texts", "3", "--json", str(out)])
    sets = json.loads(out.read_text())["sets"]
    assert code == 0 and [s["n_texts"] for s in sets.values()] == [3, 3]
    assert sets[str(text_files / "same.txt")]["curve"] == [1.0] * 3
    assert main(["redundancy", str(text_files / "en.txt"), "--sae", str(run_dir), "--hook", "layers.1",
                 "--n-texts", "7"]) == 2
    assert "has 6" in capsys.readouterr().err


def test_bad_input(run_dir, text_files, capsys):
    en, zh = str(text_files / "en.txt"), str(text_files / "zh.jsonl")
    assert main(["classify", zh, str(text_files / "empty.txt"), "--sae", str(run_dir), "--hook", "layers.1"]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["classify", zh, en, "--sae", str(run_dir), "--hook", "layers.9"]) == 2
    err = capsys.readouterr().err
    assert "no SAE for 'layers.9'" in err and "layers.1__topk" in err
    assert main(["classify", zh, en, "--sae", str(run_dir)]) == 2
    assert "choose one with --hook" in capsys.readouterr().err
    assert main(["redundancy", str(text_files / "missing.txt"), "--sae", str(run_dir), "--hook", "layers.1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["classify", zh, en, "--sae", str(run_dir), "--hook", "layers.1", "--n-features", "49"]) == 2
    assert "d_sae=48" in capsys.readouterr().err


def test_feature_index_out_of_range(tiny_lm, tiny_sae):
    from qwen_sae_jax.analysis.examples import FeatureData, init_state
    from qwen_sae_jax.analysis.render import format_feature

    data = FeatureData.from_state(init_state(tiny_sae.cfg.d_sae, 2))
    with pytest.raises(UserError, match=r"feature index 48 is out of range.*0\.\.47"):
        format_feature(data, 48, tiny_lm.tokenizer)
    with pytest.raises(UserError, match="not an integer"):
        format_feature(data, "x", tiny_lm.tokenizer)
    assert "never fired" in format_feature(data, 3, tiny_lm.tokenizer)


def test_sae_of_another_model_is_refused(tiny_lm):
    from qwen_sae_jax.lm import check_saes_fit

    from .conftest import make_sae

    with pytest.raises(UserError, match="does not have"):
        check_saes_fit(tiny_lm, {"x": make_sae(tiny_lm, hook="layers.7")})
    sae = make_sae(tiny_lm)
    wide = sae.replace(cfg=dataclasses.replace(sae.cfg, d_in=65))
    with pytest.raises(UserError, match="d_in=65"):
        check_saes_fit(tiny_lm, {"x": wide})
