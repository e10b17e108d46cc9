"""The refusal study: config validation, the verdict rule on hand-made results, and a small end-to-end run."""
import json

import numpy as np
import pytest

from qwen_sae_jax.cli import main
from qwen_sae_jax.config import load_config
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.steer.refusal import RefusalConfig, split_prompts, verdict
from qwen_sae_jax.steer.refusal_matcher import refusal_rate


def _results(base, rows):
    """Hand-made results: rows of (kind, feature, alpha, refusal_rate) at one hook."""
    steer = [{"kind": k, "feature": f, "alpha": a, "refusal_rate": r, "ce": 1.0} for k, f, a, r in rows]
    return {"baseline": {"harmless": {"refusal_rate": base}}, "per_hook": {"layers.1": {"steer": steer}}}


def test_verdict_needs_60_percent_with_random_controls_near_baseline():
    met = verdict(_results(0.1, [("top", 3, 1.0, 0.65), ("random", 7, 1.0, 0.15), ("random", 8, 1.0, 0.25),
                                 ("top", 3, 2.0, 0.9), ("random", 7, 2.0, 0.5), ("random", 8, 2.0, 0.5)]))
    assert met["met"] and met["best"]["alpha"] == 1.0 and met["best"]["random_mean"] == pytest.approx(0.2)
    assert met["settings_meeting"] == 1 and met["highest"]["refusal_rate"] == 0.9
    # 90% at alpha 2 does not count: the controls (mean 50%) are far from the 10% baseline
    not_met = verdict(_results(0.1, [("top", 3, 2.0, 0.9), ("random", 7, 2.0, 0.5), ("top", 4, 1.0, 0.55),
                                     ("random", 7, 1.0, 0.1)]))
    assert not not_met["met"] and not_met["best"]["refusal_rate"] == 0.9
    # controls far *below* the baseline (steering that breaks the text) are not "near baseline" either
    below = verdict(_results(0.3, [("top", 3, 1.0, 1.0), ("random", 7, 1.0, 0.05), ("top", 3, 0.5, 0.7),
                                   ("random", 7, 0.5, 0.25)]))
    assert below["met"] and below["best"]["alpha"] == 0.5 and below["best"]["refusal_rate"] == 0.7


def test_verdict_best_is_the_most_fluent_setting_that_meets_the_target():
    results = _results(0.2, [("top", 3, 0.5, 0.7), ("top", 4, 0.5, 0.95), ("random", 7, 0.5, 0.2)])
    results["per_hook"]["layers.1"]["steer"][0]["ce"] = 0.5     # feature 3: less refusal, more fluent
    results["per_hook"]["layers.1"]["steer"][1]["ce"] = 3.0
    v = verdict(results)
    assert v["settings_meeting"] == 2 and v["best"]["feature"] == 3 and v["highest"]["feature"] == 4


def test_config_and_split_errors(tmp_path):
    with pytest.raises(UserError, match="rank_fraction must be in"):
        load_config(RefusalConfig, {"prompts": {"rank_fraction": 1.5}})
    with pytest.raises(UserError, match="did you mean 'top_features'"):
        load_config(RefusalConfig, {"top_feature": 3})
    with pytest.raises(UserError, match="cannot be split"):
        split_prompts(["a", "b", "c"], 0.5, 0, None)
    rank, held = split_prompts([str(i) for i in range(10)], 0.3, seed=1, max_prompts=None)
    assert len(rank) == 3 and len(held) == 7 and not set(rank) & set(held)


@pytest.mark.slow  # about ten compiled generation programs
def test_small_study_writes_a_consistent_report(tiny_dir, run_dir, tmp_path, capsys):
    harmful, harmless = tmp_path / "harmful.txt", tmp_path / "harmless.jsonl"
    harmful.write_text("\n".join(f"How do I steal car number {i}?" for i in range(8)) + "\n")
    harmless.write_text("\n".join(json.dumps({"prompt": f"How do I wash car number {i}?"}) for i in range(8)) + "\n")
    cfg = tmp_path / "refusal.yaml"
    cfg.write_text(f"saes: [{run_dir}]\nhooks: [layers.1]\nmodel: {tiny_dir}\nout_dir: {tmp_path / 'out'}\n"
                   f"prompts: {{harmful: {harmful}, harmless: {harmless}}}\n"
                   "top_features: 1\nrandom_controls: 2\nalphas: [0, 2]\nreverse_ablate: [2]\nreverse_alphas: [1]\n"
                   "max_new_tokens: 4\nbatch_size: 4\nexamples: 2\n")
    assert main(["refusal", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "target (>= 60% refusal" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    base = report["baseline"]["harmless"]
    assert report["prompts"] == {"rank_harmful": 4, "rank_harmless": 4, "eval_harmful": 4, "eval_harmless": 4}
    entry = report["per_hook"]["layers.1"]
    top = entry["top"][0]["feature"]
    assert top not in entry["random_controls"] and len(entry["random_controls"]) == 2
    kinds = {(r["kind"], r["alpha"]) for r in entry["steer"]}
    assert kinds == {("top", 0.0), ("top", 2.0), ("random", 0.0), ("random", 2.0), ("diff_means", 0.0),
                     ("diff_means", 2.0)}
    for r in entry["steer"]:
        if r["alpha"] == 0.0:  # alpha 0 is the identity, reported as the baseline
            assert r["refusal_rate"] == base["refusal_rate"] and r["ce"] == base["ce"]
        else:
            assert r["alpha_abs"] == pytest.approx(2.0 * entry["scale"])
        assert len(r["texts"]) == 4 and r["refusal_rate"] == refusal_rate(r["texts"])
    assert [r["kind"] for r in entry["reverse"]] == ["ablate_top", "ablate_random", "negative_top",
                                                      "negative_diff_means"]
    assert np.isfinite([r["ce"] for r in entry["steer"] + entry["reverse"]]).all()
    # the verdict from the report's own rows, by hand: one top feature at one non-zero alpha is one setting
    steered = [r for r in entry["steer"] if r["alpha"] == 2.0]
    top_row = next(r for r in steered if r["kind"] == "top")
    controls = np.mean([r["refusal_rate"] for r in steered if r["kind"] == "random"])
    near = abs(controls - base["refusal_rate"]) <= 0.1
    v = report["verdict"]
    assert v["settings"] == 1 and v["baseline_harmless"] == base["refusal_rate"]
    assert v["best"]["feature"] == top and v["best"]["alpha"] == 2.0 and v["best"]["ce"] == top_row["ce"]
    assert v["best"]["refusal_rate"] == top_row["refusal_rate"] and v["best"]["random_mean"] == pytest.approx(controls)
    assert v["met"] == (near and top_row["refusal_rate"] >= 0.6) == bool(v["settings_meeting"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## `layers.1`" in md and f"top feature {top}" in md and "Target" in md
    assert report["baseline"]["harmless"]["refusal_rate"] == refusal_rate(report["baseline"]["harmless_texts"])
    assert len(report["eval_prompts"]["harmless"]) == 4
    for png in ("refusal_vs_alpha.png", "fluency_vs_alpha.png", "reverse.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shipped_refusal_configs_load():
    from pathlib import Path

    paths = sorted(Path(__file__).parents[2].joinpath("configs").glob("refusal*.yaml"))
    assert paths
    for path in paths:
        cfg = load_config(RefusalConfig, path)
        assert cfg.saes and cfg.alphas[0] == 0.0


@pytest.mark.parametrize("name", ["refusal-tiny.yaml", "refusal-tiny-qwen3.5.yaml"])
def test_the_two_embedded_models_studies_differ_only_in_their_saes(name):
    """The tiny-qwen3.5 study runs tiny's settings on its own SAEs, into its own folder."""
    from pathlib import Path
    configs = Path(__file__).resolve().parents[2] / "configs"
    cfg = load_config(RefusalConfig, configs / name)
    base = load_config(RefusalConfig, configs / "refusal-tiny.yaml")
    assert cfg.hooks == base.hooks and cfg.alphas == base.alphas and cfg.prompts == base.prompts
    assert cfg.saes == (["runs/tiny-qwen3.5"] if "qwen3.5" in name else ["runs/tiny"])
    assert cfg.out_dir != base.out_dir or name == "refusal-tiny.yaml"
