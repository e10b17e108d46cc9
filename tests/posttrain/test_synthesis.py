"""Feature-guided safety-data synthesis (qwen_sae_jax/posttrain/synthesis.py, `qwen-sae synthesize`): greedy
selection vs brute force, coverage vs numpy on the embedded tiny model, the candidate generator, the CLI end to end
and its one-line errors."""
import itertools
import json
import math
import re

import numpy as np
import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.posttrain import synthesis as syn

# ---------------------------------------------------------------------------------------------- selection


def reference_greedy(sets: list[set], covered: set, budget: int) -> list[int]:
    """Plain-Python greedy max coverage: most new targets, then most targets, then the earliest candidate."""
    chosen: list[int] = []
    now = set(covered)
    for _ in range(budget):
        best = max((i for i in range(len(sets)) if i not in chosen),
                   key=lambda i: (len(sets[i] - now), len(sets[i]), -i))
        chosen.append(best)
        now |= sets[best]
    return chosen


def random_case(rng):
    n, t = int(rng.integers(2, 9)), int(rng.integers(1, 12))
    activated = rng.random((n, t)) < rng.uniform(0.1, 0.6)
    covered = rng.random(t) < rng.uniform(0.0, 0.5)
    return activated, covered, int(rng.integers(1, n + 1))


def test_greedy_matches_reference_and_is_within_1_minus_1_over_e_of_the_optimum():
    rng = np.random.default_rng(0)
    worst = 1.0
    for _ in range(400):
        activated, covered, budget = random_case(rng)
        sets = [set(np.flatnonzero(row)) for row in activated]
        base = set(np.flatnonzero(covered))
        order = syn.greedy_select(activated, covered, budget)
        assert order == reference_greedy(sets, base, budget)
        got = len(base.union(*(sets[i] for i in order)))
        best = max(len(base.union(*(sets[i] for i in c))) for c in itertools.combinations(range(len(sets)), budget))
        assert got <= best
        if best > len(base):   # the guarantee holds for the newly covered targets (a monotone submodular function)
            worst = min(worst, (got - len(base)) / (best - len(base)))
            assert got - len(base) >= (1 - 1 / math.e) * (best - len(base)) - 1e-9
        curve = syn.coverage_curve(activated, covered, order)
        assert curve[0] == len(base) and curve[-1] == got and np.all(np.diff(curve) >= 0)
    assert worst < 1.0   # some case where greedy is not optimal: the bound was really exercised


def test_greedy_is_not_optimal_on_the_classic_case():
    # A = {0,1,2,3}, B = {0,1,4}, C = {2,3,5}: greedy takes A, then B (5 targets); B + C covers all 6
    activated = np.zeros((3, 6), bool)
    activated[0, [0, 1, 2, 3]] = activated[1, [0, 1, 4]] = activated[2, [2, 3, 5]] = True
    order = syn.greedy_select(activated, None, 2)
    assert order == [0, 1] and syn.coverage_curve(activated, None, order).tolist() == [0, 4, 5]
    assert syn.covered_by(activated[[1, 2]]).all()


def test_greedy_fills_the_budget_with_the_richest_candidates_once_nothing_new_is_left():
    activated = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]], bool)
    covered = np.array([True, True, True])
    assert syn.greedy_select(activated, covered, 4) == [3, 1, 0, 2]


def test_random_select_is_seeded_and_distinct():
    a = syn.random_select(50, 20, seed=3)
    assert a == syn.random_select(50, 20, seed=3) != syn.random_select(50, 20, seed=4)
    assert len(set(a)) == 20 and all(0 <= i < 50 for i in a)


@pytest.mark.parametrize("n, budget, message", [
    (5, 0, "budget must be an integer >= 1, got 0"), (5, -2, "budget must be an integer >= 1"),
    (3, 4, "budget 4 is larger than the 3 candidates"), (0, 1, "no candidates"),
])
def test_bad_budgets_and_no_candidates(n, budget, message):
    with pytest.raises(UserError, match=message):
        syn.greedy_select(np.zeros((n, 2), bool), None, budget)
    with pytest.raises(UserError, match=message):
        syn.random_select(n, budget, 0)


def test_covered_by_matches_numpy():
    rng = np.random.default_rng(1)
    activated, covered = rng.random((7, 11)) < 0.2, rng.random(11) < 0.3
    assert syn.covered_by(activated, covered).tolist() == (covered | activated.max(0)).tolist()
    assert syn.covered_by(activated[:0]).tolist() == [False] * 11


# ---------------------------------------------------------------------------------------------- inputs

def test_targets_from_every_layout(tmp_path):
    layouts = {
        "features": {"languages": ["en", "zh"], "features": [{"hook": "blocks.2.hook_resid_post", "feature": 5,
                                                             "language": "zh"}, {"hook": "layers.1", "feature": 2}]},
        "pairs": [["layers.2", 5], ["layers.1", 2], ["layers.2", 5]],
        "contrast": {"top": {"layers.2": {"last": {"mean_diff": [{"hook": "layers.2", "feature": 5}]}},
                             "layers.1": {"last": {"mean_diff": [{"hook": "layers.1", "feature": 2}]}}}},
        "refusal": {"per_hook": {"layers.2": {"top": [{"feature": 5}]}, "layers.1": {"top": [{"feature": 2}]}}},
    }
    for name, data in layouts.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        assert syn.read_targets(path) == [("layers.2", 5), ("layers.1", 2)], name


@pytest.mark.parametrize("data, message", [
    ({"features": []}, "names no features"),
    ({"features": [{"hook": "layers.1"}]}, r"feature 0 must be \{hook, feature\}"),
    ({"features": [{"hook": "layers.1", "feature": -1}]}, "feature must be an integer >= 0"),
    ({"features": [{"hook": "nowhere", "feature": 1}]}, "'nowhere' is not a hook name"),
    ({"rows": []}, "no 'features' list"),
])
def test_bad_features_files(tmp_path, data, message):
    path = tmp_path / "f.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=message):
        syn.read_targets(path)


def test_dataset_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2"},
            {"messages": [{"role": "user", "content": "p3"}, {"role": "assistant", "content": "c3"}]},
            {"text": "<|im_start|>user\np4<|im_end|>\n<|im_start|>assistant\nc4<|im_end|>\n"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    samples = syn.read_dataset(str(path))
    assert [(s.prompt, s.completion) for s in samples] == [("p1", "c1"), ("p2", ""), ("p3", "c3"), ("p4", "c4")]
    assert len(samples[1].messages) == 1
    path.write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(UserError, match=r"d.jsonl:1: a sample needs 'prompt'.*fields: question"):
        syn.read_dataset(str(path))
    path.write_text("\n  \n")
    with pytest.raises(UserError, match="holds no samples"):
        syn.read_dataset(str(path))


# ---------------------------------------------------------------------------------------------- on the tiny model

@pytest.fixture(scope="module")
def lm():
    from qwen_sae_jax.lm import load_model
    return load_model("tiny")


def sparse_relu_sae(lm, hook: str, seed: int, rate: float = 0.02, d_sae: int = 48):
    """A ReLU SAE at ``hook`` whose features each fire on about ``rate`` of the tokens of some chat text (b_enc set
    from the quantiles of the pre-activations), with a non-trivial b_dec and act_scale."""
    import jax
    import jax.numpy as jnp

    from qwen_sae_jax.sae import SAEConfig, init_sae

    cfg = SAEConfig(architecture="relu", d_in=lm.config.hidden_size, d_sae=d_sae, hook_name=hook, model_name="tiny",
                    encoder_init_norm=1.0)
    sae = init_sae(cfg, jax.random.key(seed))
    sae = sae.replace(b_dec=0.05 * jax.random.normal(jax.random.key(seed + 100), (cfg.d_in,)),
                      act_scale=jnp.float32(0.7))
    ids, _ = lm.tokenize(["How do I bake bread? Sure, first mix flour and water.", "I can't help with that."],
                         chat=True)
    x = np.asarray(lm.capture(ids, [hook])[hook], np.float64).reshape(-1, cfg.d_in)
    pre = (x * 0.7 - np.asarray(sae.b_dec)) @ np.asarray(sae.W_enc, np.float64)
    return sae.replace(b_enc=jnp.asarray(-np.quantile(pre, 1 - rate, axis=0), jnp.float32))


SAMPLES = [syn.Sample.pair("How do I bake bread?", "Mix flour, water and yeast."),
           syn.Sample.pair("Hi", ""),
           syn.Sample([{"role": "user", "content": "Tell me how to pick a lock."},
                       {"role": "assistant", "content": "I can't help with that."},
                       {"role": "user", "content": "Why not?"}, {"role": "assistant", "content": "It is illegal."}]),
           syn.Sample.pair("What's the Chinese word for 'door'?", "门"),
           syn.Sample.pair("Sort 3, 1, 2.", "1, 2, 3"), syn.Sample.pair("2+2?", "4"),
           syn.Sample.pair("Write a poem about the sea.", "The sea is wide. The sea is deep. Then: 猫 狗 河 山, "
                           "import numpy as np; def f(x): return x ** 2 # 2024-01-01 $5.99 <html> ERROR 404 !!!")]


def numpy_reference(lm, saes, targets, samples, max_tokens):
    """(surely fired, possibly fired) [samples, targets]: pre-activation > +1e-3 / > -1e-3 on some token; each
    sample's tokens at the start of an unmasked batch (causal: the padding after them changes nothing)."""
    tok = lm.tokenizer
    seqs = [tok(syn.render(tok, s), add_special_tokens=False)["input_ids"][:max_tokens] for s in samples]
    width = 48                                       # one shape for every call (one compiled capture)
    assert max(map(len, seqs)) <= width and (max_tokens < width or max(map(len, seqs)) == width)
    ids = np.array([s + [lm.pad_token_id] * (width - len(s)) for s in seqs], np.int32)
    acts = lm.capture(ids, list(saes))
    lo, hi = np.zeros((len(samples), len(targets)), bool), np.zeros((len(samples), len(targets)), bool)
    for j, (hook, f) in enumerate(targets):
        sae = saes[hook]
        x = np.asarray(acts[hook], np.float64) * float(sae.act_scale) - np.asarray(sae.b_dec, np.float64)
        pre = x @ np.asarray(sae.W_enc, np.float64)[:, f] + float(sae.b_enc[f])      # [B, T]
        for i, s in enumerate(seqs):
            lo[i, j], hi[i, j] = (pre[i, :len(s)] > 1e-3).any(), (pre[i, :len(s)] > -1e-3).any()
    return lo, hi


def with_pad_detector(lm, sae, feature: int):
    """``sae`` with ``feature`` made to fire on padding tokens and on no real token of `SAMPLES` (so a sample
    counted over its padding would wrongly activate it)."""
    import jax.numpy as jnp

    tok, hook = lm.tokenizer, sae.cfg.hook_name
    seqs = [tok(syn.render(tok, s), add_special_tokens=False)["input_ids"][:48] for s in SAMPLES]
    ids = np.array([s + [lm.pad_token_id] * (64 - len(s)) for s in seqs], np.int32)
    x = np.asarray(lm.capture(ids, [hook])[hook], np.float64) * float(sae.act_scale) - np.asarray(sae.b_dec)
    pad = np.zeros(ids.shape, bool)
    for i, s in enumerate(seqs):
        pad[i, len(s):] = True
    direction = x[pad].mean(0) - x[~pad].mean(0)
    score = x @ direction
    assert score[pad].min() > score[~pad].max()      # padding is separable from real tokens along it
    return sae.replace(W_enc=sae.W_enc.at[:, feature].set(jnp.asarray(direction, jnp.float32)),
                       b_enc=sae.b_enc.at[feature].set(-float(score[pad].min() + score[~pad].max()) / 2))


def test_activated_targets_matches_numpy(lm):
    saes = {"layers.1": with_pad_detector(lm, sparse_relu_sae(lm, "layers.1", 0), 47),
            "layers.3.mlp": sparse_relu_sae(lm, "layers.3.mlp", 1)}
    targets = [("layers.3.mlp", 4), ("layers.1", 7), ("layers.1", 0), ("layers.3.mlp", 30), ("layers.1", 47),
               ("layers.3.mlp", 11)] + [("layers.1", f) for f in range(10, 40, 3)]
    got = syn.activated_targets(lm, saes, targets, SAMPLES, batch_size=3, max_tokens=48)
    lo, hi = numpy_reference(lm, saes, targets, SAMPLES, max_tokens=48)
    assert got.shape == (len(SAMPLES), len(targets))
    assert np.all(lo <= got) and np.all(got <= hi)
    assert 0 < lo.sum() and lo.sum() < lo.size and (lo == hi).mean() > 0.9   # a real, mostly unambiguous test
    assert not hi[:, targets.index(("layers.1", 47))].any()                  # padding is not counted
    cut = syn.activated_targets(lm, saes, targets, SAMPLES, batch_size=3, max_tokens=33)   # same padded shape
    cut_lo, cut_hi = numpy_reference(lm, saes, targets, SAMPLES, max_tokens=33)
    assert np.all(cut_lo <= cut) and np.all(cut <= cut_hi) and np.all(cut <= got)
    assert cut_lo.sum() < lo.sum()                                          # the cut really drops activations
    with pytest.raises(UserError, match=r"feature 48 of layers.1 is outside its SAE \(d_sae=48"):
        syn.activated_targets(lm, saes, [("layers.1", 48)], SAMPLES)
    with pytest.raises(UserError, match="names hook 'layers.2' but no --sae reads it; hooks with an SAE: layers.1"):
        syn.activated_targets(lm, saes, [("layers.2", 1)], SAMPLES)


def test_generate_candidates_is_seeded_and_uses_the_templates(lm):
    kw = dict(templates=("How do I", "My friend wants to"), free_fraction=0.25, max_prompt_tokens=8,
              max_new_tokens=8, batch_size=6)
    calls = []
    a = syn.generate_candidates(lm, 10, seed=0, progress=lambda d, n: calls.append((d, n)), **kw)
    assert calls == [(6, 10), (10, 10)]
    assert a == syn.generate_candidates(lm, 10, seed=0, **kw)
    assert a != syn.generate_candidates(lm, 10, seed=1, **kw)
    assert 8 <= len(a) <= 10 and {s.source for s in a} <= {"template", "free"}
    assert all(s.prompt.startswith(kw["templates"]) for s in a if s.source == "template")
    assert all(s.messages[0]["role"] == "user" and s.prompt for s in a)
    with pytest.raises(UserError, match="number of candidates must be >= 1"):
        syn.generate_candidates(lm, 0)


# ---------------------------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def cli_inputs(lm, tmp_path_factory):
    from qwen_sae_jax.sae import save_sae

    root = tmp_path_factory.mktemp("synth")
    save_sae(sparse_relu_sae(lm, "layers.2", 3, rate=0.01, d_sae=64), root / "sae")
    (root / "features.json").write_text(json.dumps({"features": [{"hook": "layers.2", "feature": f}
                                                                 for f in range(0, 64, 2)]}))
    (root / "data.jsonl").write_text(json.dumps({"prompt": "What is 2+2?", "completion": "4."}) + "\n")
    return root


def test_cli_end_to_end(lm, cli_inputs, capsys):
    from qwen_sae_jax.cli import main

    out = cli_inputs / "out"
    code = main(["synthesize", "--sae", str(cli_inputs / "sae"), "--features", str(cli_inputs / "features.json"),
                 "--data", str(cli_inputs / "data.jsonl"), "--budget", "3", "--candidates", "12", "--batch-size", "6",
                 "--max-prompt-tokens", "8", "--max-new-tokens", "8", "--out", str(out), "--seed", "5"])
    text = capsys.readouterr().out
    assert code == 0, text
    summary = json.loads((out / "summary.json").read_text())
    targets = [(r["hook"], r["feature"]) for r in summary["targets"]]
    assert len(targets) == 32 and summary["budget"] == 3
    existing = np.array(summary["existing_covered"])
    assert 0 < existing.sum() < 32                                              # the data misses some targets
    for name, file in (("guided", "synthesized.jsonl"), ("random", "random.jsonl")):
        rows = [json.loads(line) for line in (out / file).read_text().splitlines()]
        assert len(rows) == 3
        samples = [syn.Sample(r["messages"]) for r in rows]
        activated = syn.activated_targets(lm, {"layers.2": syn_sae(cli_inputs)}, targets, samples)
        now = existing.copy()
        for row, act in zip(rows, activated):                                   # the rows say what they cover
            assert [(t["hook"], t["feature"]) for t in row["targets"]] == [t for t, a in zip(targets, act) if a]
            assert [(t["hook"], t["feature"]) for t in row["new_targets"]] == \
                [t for t, a, c in zip(targets, act, now) if a and not c]
            now |= act
        assert summary[name]["covered"] == now.sum() and summary[name]["coverage"] == pytest.approx(now.mean())
        assert summary[name]["newly_covered"] == (now & ~existing).sum()
        assert f"{name:<7} N=3    coverage {now.sum()}/32 ({100 * now.mean():.1f}%)  newly covered " \
               f"{(now & ~existing).sum()}" in text
    assert summary["guided"]["newly_covered"] >= summary["random"]["newly_covered"]
    assert summary["guided"]["newly_covered"] > 0
    assert re.search(r"^synthesis: n=3 guided_coverage=[0-9.]+ random_coverage=[0-9.]+$", text, re.M)


def syn_sae(root):
    from qwen_sae_jax import load_sae
    return load_sae(str(root / "sae"))


@pytest.mark.parametrize("change, message", [
    ({"--budget": "0"}, "argument --budget: expected an integer >= 1, got 0"),
    ({"--budget": "9"}, "--budget 9 is larger than --candidates 8"),
    ({"--features": "{bad}"}, "the features file names hook 'layers.0' but no --sae reads it; hooks with an SAE: "
                              "layers.2"),
    ({"--features": "{range}"}, r"feature 64 of layers.2 is outside its SAE \(d_sae=64; valid 0..63\)"),
    ({"--data": "{empty}"}, "dataset .* holds no samples"),
    ({"--free-fraction": "1.5"}, r"--free-fraction must be in \[0, 1\]"),
    ({"--out": "{file}"}, "is a file, not a folder"),
])
def test_cli_bad_input_is_one_line(cli_inputs, tmp_path, capsys, change, message):
    from qwen_sae_jax.cli import main

    (tmp_path / "bad.json").write_text(json.dumps([["layers.0", 1]]))
    (tmp_path / "range.json").write_text(json.dumps([["layers.2", 64]]))
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "file").write_text("x")
    args = {"--sae": str(cli_inputs / "sae"), "--features": str(cli_inputs / "features.json"),
            "--data": str(cli_inputs / "data.jsonl"), "--budget": "2", "--candidates": "8",
            "--out": str(tmp_path / "out")}
    args.update({k: v.format(bad=tmp_path / "bad.json", range=tmp_path / "range.json",
                             empty=tmp_path / "empty.jsonl", file=tmp_path / "file") for k, v in change.items()})
    try:
        code = main(["synthesize", *itertools.chain.from_iterable(args.items())])
    except SystemExit as exit:                     # argparse's own errors exit from inside the parser
        code = exit.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("qwen-sae synthesize: error: ") and re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_cli_help_documents_every_option(capsys):
    from qwen_sae_jax.cli import build_parser, main

    parser = build_parser(only="synthesize")
    sub = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("synthesize"))
    options = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 18 and all(a.help and len(a.help) > 10 for a in options)
    with pytest.raises(SystemExit):
        main(["synthesize", "--help"])
    text = capsys.readouterr().out
    assert all(a.option_strings[0] in text for a in options) and "synthesis: n=" not in text
