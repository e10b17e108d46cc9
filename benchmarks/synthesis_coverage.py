"""Feature-guided safety-data synthesis vs random synthesis on the embedded tiny model: target coverage vs N.

    .venv/bin/python benchmarks/synthesis_coverage.py [--out runs/bench-synthesis] [--seeds 0 1 2] [--budget 32]
        [--candidates 256] [--hooks layers.1 layers.2 layers.3] [--min-harmful 2] [--categories fraud theft]

1. SAEs: one TopK SAE (k 32, d_sae 1536) per ``--hooks`` entry, trained together on the tiny model's held-out
   text (configs/tiny.yaml's data, 300K tokens; reused when ``OUT/sae`` holds them).
2. Ranking conversations: the harmful and harmless held-out prompt lists split in halves with the refusal study's
   seeded shuffle (`qwen-sae refusal`); the ranking halves (75 + 75 prompts), each with the model's greedy reply
   (48 tokens).
3. Targets, the refusal-related features: the harmful-vs-harmless contrast measured with the coverage criterion
   itself, i.e. every feature (of every hook) that fires on at least ``--min-harmful`` harmful conversations and on
   none of the harmless ones. (The refusal study's own top features, by last-token mean_diff, are reported too:
   they are dense, and a handful of harmless conversations activates every one of them, so they leave nothing
   to cover.)
4. Existing dataset: the 75 harmless conversations plus the harmful ones of ``--categories`` only (a dataset
   with a little, narrow safety data): prompt/completion pairs.
5. For each seed: ``--candidates`` candidates from `generate_candidates` (templates + free requests, T = 1), the
   activated-target matrix of the pool, the greedy selection (`greedy_select`) and ``--random-draws`` random
   selections (`random_select`, seeds ``1000 * seed + r``) from the same pool. Coverage (existing + kept) after
   each N = 1..budget: guided, random (mean of the draws), and the pool's ceiling (all candidates).

Writes ``OUT/curve.json``, ``OUT/curve.md`` (the table) and ``OUT/coverage_vs_n.png`` (matplotlib). Last line:
``synthesis: n=N guided_coverage=X random_coverage=Y`` (means over seeds at N = budget).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _tiny_runs import train_saes

from qwen_sae_jax.lm import TINY_DIR

HELDOUT = Path(TINY_DIR) / "heldout"


def prompt_rows(name: str) -> tuple[list[dict], list[dict]]:
    """(ranking half, held-out half) of a held-out prompt list, split as the refusal study splits it."""
    from qwen_sae_jax.steer.refusal import split_prompts

    rows = [json.loads(line) for line in (HELDOUT / f"{name}_prompts.jsonl").read_text().splitlines() if line]
    rank, held = split_prompts(list(range(len(rows))), 0.5, 0 if name == "harmful" else 1, None)
    return [rows[i] for i in rank], [rows[i] for i in held]


def ranking_samples(lm, harmless: list[dict], harmful: list[dict]):
    """The ranking-half prompts (harmless first) with the model's greedy replies (48 tokens) as `Sample`s."""
    from qwen_sae_jax.posttrain.synthesis import Sample

    prompts = [r["prompt"] for r in harmless + harmful]
    replies = []
    for start in range(0, len(prompts), 64):
        replies += lm.generate(prompts[start:start + 64], max_new_tokens=48, chat=True)
    return [Sample.pair(p, r.strip()) for p, r in zip(prompts, replies)]


def choose_targets(lm, saes: dict, samples: list, n_harmless: int, min_harmful: int) -> list[tuple[str, int]]:
    """Features (every hook) that no harmless ranking conversation activates and at least ``min_harmful`` harmful
    ones do: the harmful-vs-harmless contrast measured with the coverage criterion itself."""
    from qwen_sae_jax.posttrain import synthesis as syn

    every = [(h, f) for h in saes for f in range(saes[h].cfg.d_sae)]
    activated = syn.activated_targets(lm, saes, every, samples, batch_size=32)
    keep = ~activated[:n_harmless].any(0) & (activated[n_harmless:].sum(0) >= min_harmful)
    return [t for t, k in zip(every, keep) if k]


def study_targets(lm, saes: dict, harmful: list[str], harmless: list[str], per_hook: int) -> list[tuple[str, int]]:
    """The refusal study's top features: mean_diff (harmful - harmless prompts) at the last prompt token."""
    from qwen_sae_jax.steer.contrast import rank_features

    ranking = rank_features(lm, saes, harmful, harmless, chat=True, batch_size=32)
    return [(hook, int(f)) for hook in saes for f in ranking[hook]["last"].ranking("mean_diff")[:per_hook]]


def one_seed(lm, saes, targets, existing, args, seed: int) -> dict:
    from qwen_sae_jax.posttrain import synthesis as syn

    start = time.time()
    pool = syn.generate_candidates(lm, args.candidates, seed=seed, max_new_tokens=48, batch_size=64)
    activated = syn.activated_targets(lm, saes, targets, pool, batch_size=64)
    n_t = len(targets)
    guided = syn.coverage_curve(activated, existing, syn.greedy_select(activated, existing, args.budget)) / n_t
    draws = [syn.coverage_curve(activated, existing, syn.random_select(len(pool), args.budget, 1000 * seed + r))
             for r in range(args.random_draws)]
    random = np.mean(draws, axis=0) / n_t
    ceiling = float(syn.covered_by(activated, existing).mean())
    free = sum(s.source == "free" for s in pool)
    print(f"seed {seed}: {len(pool)} candidates ({free} free) in {time.time() - start:.0f} s; pool ceiling "
          f"{ceiling:.3f}; at N={args.budget}: guided {guided[-1]:.3f}, random {random[-1]:.3f}", flush=True)
    return {"seed": seed, "candidates": len(pool), "guided": guided.tolist(), "random": random.tolist(),
            "ceiling": ceiling}


def table(runs: list[dict], base: float, budget: int) -> str:
    g, r = np.array([x["guided"] for x in runs]), np.array([x["random"] for x in runs])
    lines = [f"existing data alone: coverage {base:.3f}; pool ceiling (all candidates) "
             f"{np.mean([x['ceiling'] for x in runs]):.3f} (mean over {len(runs)} seeds)", "",
             "| N | guided mean (min-max) | random mean (min-max) |", "|---|---|---|"]
    for n in sorted({1, 2, 4, 8, 16, 32, 64, 128, budget} & set(range(1, budget + 1))):
        lines.append(f"| {n} | {g[:, n].mean():.3f} ({g[:, n].min():.3f}-{g[:, n].max():.3f}) | "
                     f"{r[:, n].mean():.3f} ({r[:, n].min():.3f}-{r[:, n].max():.3f}) |")
    return "\n".join(lines)


def plot(runs: list[dict], base: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.arange(len(runs[0]["guided"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, color, label in (("guided", "C0", "feature-guided (greedy)"), ("random", "C1", "random (same pool)")):
        curves = np.array([x[key] for x in runs])
        ax.plot(n, curves.mean(0), color=color, label=label)
        ax.fill_between(n, curves.min(0), curves.max(0), color=color, alpha=0.2)
    ax.axhline(np.mean([x["ceiling"] for x in runs]), color="grey", ls="--", label="all candidates")
    ax.axhline(base, color="black", ls=":", label="existing data alone")
    ax.set_xlabel("kept synthetic samples N")
    ax.set_ylabel("target coverage (existing + kept)")
    ax.set_title(f"tiny model, {len(runs)} seeds (band: min-max)")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.posttrain import synthesis as syn
    from qwen_sae_jax.steer.sources import load_hook_saes

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-synthesis"))
    parser.add_argument("--hooks", nargs="+", default=["layers.1", "layers.2", "layers.3"])
    parser.add_argument("--per-hook", type=int, default=16, help="refusal-study features per hook (reported)")
    parser.add_argument("--min-harmful", type=int, default=2,
                        help="a target must fire on at least this many harmful ranking conversations")
    parser.add_argument("--categories", nargs="*", default=["fraud", "theft"],
                        help="harmful categories the existing dataset holds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=256)
    parser.add_argument("--random-draws", type=int, default=10, help="random selections per seed (averaged)")
    args = parser.parse_args()
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    folders = train_saes(args.out, args.hooks)
    saes = load_hook_saes(list(folders.values()))
    lm = load_model("tiny")
    (rank_harmful, _), (rank_harmless, _) = prompt_rows("harmful"), prompt_rows("harmless")
    samples = ranking_samples(lm, rank_harmless, rank_harmful)
    n_harmless = len(rank_harmless)
    data = samples[:n_harmless] + [s for s, r in zip(samples[n_harmless:], rank_harmful)
                                   if r["category"] in args.categories]
    study = study_targets(lm, saes, [r["prompt"] for r in rank_harmful], [r["prompt"] for r in rank_harmless],
                          args.per_hook)
    covered = syn.covered_by(syn.activated_targets(lm, saes, study, data, batch_size=64))
    print(f"refusal-study targets (top {args.per_hook} per hook by last-token mean_diff): {len(study)}; the existing "
          f"data covers {int(covered.sum())} ({covered.mean():.3f}); the first 10 harmless conversations alone "
          f"{int(syn.covered_by(syn.activated_targets(lm, saes, study, data[:10])).sum())}", flush=True)
    targets = choose_targets(lm, saes, samples, n_harmless, args.min_harmful)
    existing = syn.covered_by(syn.activated_targets(lm, saes, targets, data, batch_size=64))
    per_hook = ", ".join(f"{h}: {sum(g == h for g, _ in targets)}" for h in saes)
    print(f"targets: {len(targets)} features ({per_hook}) that >= {args.min_harmful} of the {len(rank_harmful)} "
          f"harmful ranking conversations activate and none of the {n_harmless} harmless ones; existing data: "
          f"{len(data)} samples ({n_harmless} harmless + {len(data) - n_harmless} harmful of {args.categories}) "
          f"cover {int(existing.sum())} ({existing.mean():.3f})", flush=True)
    runs = [one_seed(lm, saes, targets, existing, args, seed) for seed in args.seeds]
    md = table(runs, float(existing.mean()), args.budget)
    print("\n" + md + "\n")
    (args.out / "curve.md").write_text(md + "\n")
    (args.out / "curve.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                     "targets": targets, "existing": existing.tolist(),
                                                     "runs": runs}, indent=1))
    plot(runs, float(existing.mean()), args.out / "coverage_vs_n.png")
    print(f"wrote {args.out}/curve.md, curve.json, coverage_vs_n.png ({time.time() - started:.0f} s in all)")
    g = np.mean([x["guided"][-1] for x in runs])
    r = np.mean([x["random"][-1] for x in runs])
    print(f"synthesis: n={args.budget} guided_coverage={g:.4f} random_coverage={r:.4f}")


if __name__ == "__main__":
    main()
