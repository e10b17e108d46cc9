"""GRPO against repetition on the embedded tiny model: a text n-gram reward vs an SAE feature penalty vs both.

    .venv/bin/python benchmarks/rl_repetition.py [--out runs/bench-rl] [--steps 60] [--lr 5e-5] [--seed 0]

1. Prompts: the openings (first 32 tokens) of 160-character windows of the tiny model's held-out Python docs and
   code (`docs.jsonl`, `code.jsonl`; a window every 400 characters of each document's first 2000), continued as
   raw text: greedy decoding loops there. The first half of each file's documents gives the RL prompts, the
   second half the held-out evaluation prompts.
2. Base rate: share of *repetitive* continuations (48 new tokens; repetitive = at least ``--threshold`` of the
   token 4-grams repeat an earlier one, the RL text score) of the held-out prompts, greedy and sampled
   (temperature ``--temperature``, seeds 0 and 1), plus the mean score. The benchmark needs the greedy rate >= 15%
   (it is far above).
3. SAE: one TopK SAE (k 32, d_sae 1536, 300K tokens of the held-out text, configs/tiny.yaml's recipe) on
   ``layers.2``, the residual after the third of four layers.
4. Repetition features, found as `qwen-sae contrast` finds them (`steer.contrast.rank_features`, latents averaged
   over each text's tokens): the base model's sampled continuations of the RL prompts (4 seeds) split into
   repetitive (score >= threshold) and non-repetitive (score < 0.05) texts; the top ``--features`` by mean_diff.
   The SAE coefficient is calibrated on the same continuations so that both terms spread alike:
   c_sae = std(text score) / std(SAE penalty).
5. Three GRPO runs, equal budget (configs/rl-tiny.yaml: ``--steps`` steps x 4 prompts x G 4 responses of 48
   tokens, temperature 0.3, 2 updates per rollout, KL 0.04, lr 5e-5; same prompts, seeds and learning rate):
   text reward only (c_rep 1), text + SAE (c_rep 1, c_sae), SAE only (c_sae).
6. Each model (base and the three runs) on the held-out prompts: repetition rate greedy / sampled and mean
   score; held-out CE (nats/token, first 64 tokens of 48 documents each of english / chinese / chat, never used as
   prompts) and its change relative to the base model; refusal rates (greedy, 32 tokens, the refusal-phrase
   matcher of the refusal study) on the 150 held-out harmful and 150 harmless prompts and their change in points;
   the mean SAE penalty (the features of step 4) of the greedy continuations.

Last line: ``rl: base_rep=X text_rep=Y sae_rep=Z both_rep=W ce_rel=A`` (greedy repetition rates; ce_rel is the
largest relative CE change of the three runs). Runs whose ``OUT/NAME/hf`` exists are reused (use a fresh --out).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _tiny_runs import held_out_ce

from qwen_sae_jax.config import load_config
from qwen_sae_jax.lm import TINY_DIR

HELDOUT = Path(TINY_DIR) / "heldout"
HOOK = "layers.2"
PROMPT_TOKENS, NEW_TOKENS, N_GRAM = 32, 48, 4
SAMPLE_SEEDS = (0, 1)
RUNS = ("text", "both", "sae")


def _rows(name: str, key: str = "text") -> list[str]:
    return [json.loads(line)[key] for line in (HELDOUT / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def prompt_windows() -> tuple[list[str], list[str]]:
    """(RL prompts, held-out prompts): windows of the first / second half of each file's documents."""
    train, held = [], []
    for name in ("docs", "code"):
        docs = _rows(name)
        for i, doc in enumerate(docs):
            windows = [doc[j:j + 160] for j in range(0, min(len(doc), 2000), 400) if doc[j:j + 160].strip()]
            (train if i < len(docs) // 2 else held).extend(windows)
    return train, held


def continuations(lm, prompts: list[str], temperature: float, seed: int) -> dict:
    """The continuations of the prompts' first 32 tokens: ``ids``, ``mask`` (prompt), ``out``, ``lengths`` (as
    generated), ``toks`` (stop tokens left out) and ``texts``."""
    from qwen_sae_jax.lm import pad_batch

    encoded = [lm.tokenizer(p, add_special_tokens=False)["input_ids"][:PROMPT_TOKENS] for p in prompts]
    ids, mask = pad_batch(encoded, pad_id=lm.pad_token_id, side="left")
    out, lengths = lm.generate_tokens(ids, mask, max_new_tokens=NEW_TOKENS, temperature=temperature, seed=seed)
    stops = set(lm.stop_token_ids())
    toks = [[t for t in row[:n].tolist() if t not in stops] for row, n in zip(out, lengths)]
    return {"ids": ids, "mask": mask, "out": out, "lengths": lengths, "toks": toks,
            "texts": [lm.tokenizer.decode(t, skip_special_tokens=True) for t in toks]}


def penalties(lm, probe, gen: dict) -> np.ndarray:
    """The SAE penalty of each continuation as the RL reward computes it: in context, mean over its tokens."""
    from qwen_sae_jax.posttrain.rl_reward import sae_penalty

    N = gen["out"].shape[1]
    resp = np.arange(N)[None, :] < gen["lengths"][:, None]
    ids = np.concatenate([gen["ids"], np.where(resp, gen["out"], lm.pad_token_id)], axis=1)
    mask = np.concatenate([gen["mask"], resp.astype(np.int32)], axis=1)
    h = lm.capture(ids, [probe.hook], mask)[probe.hook]
    in_full = np.concatenate([np.zeros_like(gen["mask"], bool), resp], axis=1)
    return np.asarray(sae_penalty(h, probe, in_full, "mean"), np.float64)


def scores(toks: list[list[int]]) -> np.ndarray:
    """The RL text score (repeated token 4-gram fraction) of each continuation."""
    from qwen_sae_jax.posttrain.rl_reward import repeated_ngram_fraction
    return np.asarray([repeated_ngram_fraction(t, N_GRAM) for t in toks])


def train_sae(out: Path) -> str:
    from qwen_sae_jax.train.config import TrainConfig
    from qwen_sae_jax.train.loop import train

    folder = out / "sae-train" / "saes" / f"{HOOK}__topk-k32"
    if not folder.exists():
        train(load_config(TrainConfig, "configs/tiny.yaml", [
            f"run_dir={out / 'sae-train'}", f"hooks=[{HOOK}]", "train.total_tokens=300000", "eval.tokens=2048",
            "saes.0.optim.decay_steps=100", "log.every=100", "log.progress=lines"]))
    return str(folder)


def find_features(lm, sae_dir: str, prompts: list[str], args, out: Path) -> tuple[Path, float, dict]:
    """Write the repetition features file; returns (path, c_sae, info)."""
    from qwen_sae_jax.interop import load_sae
    from qwen_sae_jax.posttrain.rl_reward import build_feature_probes, write_features
    from qwen_sae_jax.steer.contrast import rank_features

    gens = [continuations(lm, prompts, args.temperature, 100 + seed) for seed in range(4)]
    texts = [x for g in gens for x in g["texts"]]
    rep = scores([t for g in gens for t in g["toks"]])
    pos = [x for x, r in zip(texts, rep) if r >= args.threshold and x.strip()]
    neg = [x for x, r in zip(texts, rep) if r < 0.05 and x.strip()]
    sae = load_sae(sae_dir)
    ranked = rank_features(lm, {HOOK: sae}, pos, neg, max_tokens=NEW_TOKENS)[HOOK]["mean"]
    feats = [(HOOK, int(f)) for f in ranked.ranking("mean_diff")[:args.features]]
    path = out / "repetition_features.json"
    write_features(path, feats, source=f"rank_features: {len(pos)} repetitive vs {len(neg)} other continuations")
    (probe,) = build_feature_probes(lm, {"sae": sae}, feats)
    pen_arr = np.concatenate([penalties(lm, probe, g) for g in gens])
    tops = {f: top_tokens(lm, probe, gens[0], j) for j, (_, f) in enumerate(feats[:4])}
    c_sae = float(rep.std() / max(pen_arr.std(), 1e-9))
    corr = float(np.corrcoef(rep, pen_arr)[0, 1])
    info = {"n_pos": len(pos), "n_neg": len(neg), "features": [f for _, f in feats],
            "mean_diff": [float(ranked.mean_diff[f]) for _, f in feats], "c_sae": c_sae, "corr_rep_sae": corr,
            "top_tokens": tops}
    print(f"features: {len(pos)} repetitive vs {len(neg)} non-repetitive continuations; top {args.features}: "
          f"{info['features']}; corr(text score, SAE penalty) = {corr:.3f}; c_sae = {c_sae:.4f}", flush=True)
    for f, toks in tops.items():
        print(f"  feature {f} is strongest on the continuation tokens {' '.join(toks)}")
    return path, c_sae, info


def top_tokens(lm, probe, gen: dict, j: int, k: int = 10) -> list[str]:
    """The ``k`` continuation tokens (repr) where the probe's feature ``j`` is strongest."""
    from qwen_sae_jax.posttrain.rl_reward import feature_activations

    N, P = gen["out"].shape[1], gen["ids"].shape[1]
    resp = np.arange(N)[None, :] < gen["lengths"][:, None]
    ids = np.concatenate([gen["ids"], np.where(resp, gen["out"], lm.pad_token_id)], axis=1)
    mask = np.concatenate([gen["mask"], resp.astype(np.int32)], axis=1)
    a = np.asarray(feature_activations(lm.capture(ids, [probe.hook], mask)[probe.hook], probe))[:, P:, j]
    order = np.argsort(np.where(resp, a, -np.inf), axis=None)[::-1][:k]
    return [repr(lm.tokenizer.decode([int(gen["out"].flat[i])])) for i in order]


def rl_run(out: Path, name: str, prompts_file: Path, reward: list[str], args) -> Path:
    from qwen_sae_jax.posttrain.rl_config import RLConfig
    from qwen_sae_jax.posttrain.rl_loop import run_rl

    hf = out / name / "hf"
    if not hf.exists():
        cfg = load_config(RLConfig, "configs/rl-tiny.yaml", [
            f"run_dir={out / name}", f"prompts.files=[{prompts_file}]", "prompts.text_column=prompt",
            f"prompts.max_prompt_len={PROMPT_TOKENS}", f"rollout.max_new_tokens={NEW_TOKENS}",
            f"rollout.temperature={args.temperature}", f"rollout.seed={args.seed}", f"prompts.seed={args.seed}",
            f"reward.repetition.n={N_GRAM}", f"train.steps={args.steps}", f"optim.lr={args.lr}",
            "checkpoint.every=0", "log.every=10", "log.progress=lines", *reward])
        run_rl(cfg)
    return hf


def evaluate(model: str, prompts: list[str], ce_docs: dict[str, list[str]], args, probe=None) -> dict:
    """The held-out measurements of one model (module docstring); ``probe``: also the mean SAE penalty of its
    greedy continuations."""
    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.steer.refusal_matcher import refusal_rate

    lm = load_model(model)
    greedy = continuations(lm, prompts, 0.0, 0)
    g = scores(greedy["toks"])
    penalty = float(penalties(lm, probe, greedy).mean()) if probe is not None else None
    s = np.concatenate([scores(continuations(lm, prompts, args.temperature, seed)["toks"]) for seed in SAMPLE_SEEDS])
    ce = {name: held_out_ce(lm, docs) for name, docs in ce_docs.items()}
    refusal = {kind: refusal_rate(lm.generate(_rows(f"{kind}_prompts", "prompt"), max_new_tokens=32, chat=True))
               for kind in ("harmful", "harmless")}
    return {"rep_greedy": float((g >= args.threshold).mean()), "score_greedy": float(g.mean()),
            "rep_sampled": float((s >= args.threshold).mean()), "score_sampled": float(s.mean()),
            "ce": ce, "ce_mean": float(np.mean(list(ce.values()))), "refusal": refusal, "penalty_greedy": penalty,
            "examples": [t[:160] for t, r in zip(greedy["texts"], g) if r >= args.threshold][:2]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/bench-rl", help="output folder (runs whose hf/ exists are reused)")
    p.add_argument("--steps", type=int, default=60, help="GRPO steps of each run")
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate of each run")
    p.add_argument("--temperature", type=float, default=0.3, help="rollout (and sampled evaluation) temperature")
    p.add_argument("--threshold", type=float, default=0.2, help="a continuation is repetitive from this score")
    p.add_argument("--features", type=int, default=16, help="repetition features kept")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt order and the rollouts")
    args = p.parse_args()
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from qwen_sae_jax.interop import load_sae
    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.posttrain.rl_reward import build_feature_probes
    from qwen_sae_jax.posttrain.synthesis import read_targets

    train_prompts, held = prompt_windows()
    prompts_file = out / "rl_prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": x}) + "\n" for x in train_prompts))
    ce_docs = {name: _rows(name)[-48:] for name in ("english", "chinese", "chat")}
    results: dict = {"args": vars(args), "n_rl_prompts": len(train_prompts), "n_heldout_prompts": len(held)}
    results["base"] = evaluate("tiny", held, ce_docs, args)
    print(f"base: greedy repetition rate {results['base']['rep_greedy']:.3f}, sampled "
          f"{results['base']['rep_sampled']:.3f} ({len(held)} held-out prompts) [{time.time() - t0:.0f}s]", flush=True)
    if results["base"]["rep_greedy"] < 0.15:
        print("warning: the base greedy repetition rate is below 15%: these prompts do not test repetition")
    sae_dir = train_sae(out)
    features, c_sae, results["features"] = find_features(load_model("tiny"), sae_dir, train_prompts, args, out)
    base_lm = load_model("tiny")
    (probe,) = build_feature_probes(base_lm, {"sae": load_sae(sae_dir)}, read_targets(features))
    results["base"]["penalty_greedy"] = float(penalties(base_lm, probe, continuations(base_lm, held, 0.0, 0)).mean())
    sae = [f"reward.sae.features={features}", f"reward.sae.saes=[{sae_dir}]"]
    rewards = {"text": ["reward.repetition.coefficient=1.0"],
               "both": ["reward.repetition.coefficient=1.0", f"reward.sae.coefficient={c_sae}", *sae],
               "sae": ["reward.repetition.coefficient=0", f"reward.sae.coefficient={c_sae}", *sae]}
    for name in RUNS:
        hf = rl_run(out, name, prompts_file, rewards[name], args)
        results[name] = evaluate(str(hf), held, ce_docs, args, probe)
        print(f"{name}: greedy repetition rate {results[name]['rep_greedy']:.3f} [{time.time() - t0:.0f}s]", flush=True)
    results["seconds"] = time.time() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1))
    summarize(results)


def summarize(results: dict) -> None:
    base = results["base"]
    print("\n| model | rep greedy | rep sampled | score greedy | score sampled | SAE penalty greedy | CE (mean) | "
          "CE rel | refusal harmful | refusal harmless |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in ("base", *RUNS):
        r = results[name]
        rel = r["ce_mean"] / base["ce_mean"] - 1
        dh = 100 * (r["refusal"]["harmful"] - base["refusal"]["harmful"])
        dl = 100 * (r["refusal"]["harmless"] - base["refusal"]["harmless"])
        print(f"| {name} | {r['rep_greedy']:.3f} | {r['rep_sampled']:.3f} | {r['score_greedy']:.3f} | "
              f"{r['score_sampled']:.3f} | {r['penalty_greedy']:.2f} | {r['ce_mean']:.3f} | {rel:+.4f} | "
              f"{r['refusal']['harmful']:.3f} ({dh:+.1f} pt) | {r['refusal']['harmless']:.3f} ({dl:+.1f} pt) |")
    print("CE per source: " + "; ".join(f"{name} " + ", ".join(f"{k} {v:.3f}" for k, v in results[name]["ce"].items())
                                        for name in ("base", *RUNS)))
    rels = [results[name]["ce_mean"] / base["ce_mean"] - 1 for name in RUNS]
    worst = max(rels, key=abs)
    print(f"{results['seconds']:.0f} s")
    print(f"rl: base_rep={base['rep_greedy']:.3f} text_rep={results['text']['rep_greedy']:.3f} "
          f"sae_rep={results['sae']['rep_greedy']:.3f} both_rep={results['both']['rep_greedy']:.3f} "
          f"ce_rel={worst:+.4f}")


if __name__ == "__main__":
    main()
