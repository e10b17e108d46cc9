"""`qwen-sae synthesize`: feature-guided safety-data synthesis (qwen_sae_jax/posttrain/synthesis.py)."""
from __future__ import annotations

import argparse
import json
import time

from qwen_sae_jax.cli.options import check_output_folder, finite_float, int_at_least, progress

HELP = "synthesise chat samples that activate the target SAE features an existing dataset misses (+ a random baseline)"

EPILOG = """\
What it does:
  1. reads the target features (--features) and measures which of them the existing dataset (--data) activates:
     a target counts as covered when its SAE latent is > 0 on some token of some sample (the sample rendered
     with the model's chat template);
  2. samples --candidates prompt-completion pairs from the model: the model writes the user request (from a
     template opening, or from nothing with probability --free-fraction) and then its reply;
  3. keeps --budget candidates greedily, each time the one activating the most still-uncovered targets
     (ties: more targets in total, then the earlier candidate); the random baseline keeps --budget candidates
     of the same pool at random (seeded by --seed);
  4. prints the coverage of both (existing data + kept samples) and writes OUT:
       synthesized.jsonl  the guided samples, in the order kept: prompt, completion, messages, source,
                          targets (the target features it activates), new_targets (those it newly covered)
       random.jsonl       the random baseline's samples (same fields)
       summary.json       the targets, which are covered by what, and both coverages

Features file (JSON): {"features": [{"hook": "layers.3", "feature": 115}, ...]} (a SASFT features file works: its
other keys are ignored), a list of [hook, feature] pairs, a `qwen-sae contrast --json` file (the 'last' /
'mean_diff' lists) or a `qwen-sae refusal` report.json (each hook's 'top' list).
Dataset (JSONL, one sample per line): {"prompt": ..., "completion": ...} (completion optional),
{"messages": [{"role": ..., "content": ...}, ...]} or {"text": "<|im_start|>user\\n...<|im_end|>\\n..."};
'tiny:PATH' is a file inside the embedded model's folder.

example:
  qwen-sae contrast tiny:heldout/harmful_prompts.jsonl tiny:heldout/harmless_prompts.jsonl --column prompt \\
      --chat --sae runs/tiny --hook layers.3 --top 20 --json refusal.json
  qwen-sae synthesize --sae runs/tiny --hook layers.3 --features refusal.json --data sft.jsonl --budget 32 \\
      --out runs/synth
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--sae", action="append", required=True, metavar="PATH",
                        help="an SAE (any supported format) or a training run directory (repeatable); every hook the "
                             "features file names needs one")
    parser.add_argument("--hook", action="append", metavar="HOOK",
                        help="only load the SAEs of these hooks (names, aliases or globs; default: every SAE found)")
    parser.add_argument("--variant", help="SAE variant when a run directory has several per hook")
    parser.add_argument("--features", required=True, metavar="FILE", help="the target features (JSON, see below)")
    parser.add_argument("--data", required=True, metavar="FILE", help="the existing dataset (JSONL, see below)")
    parser.add_argument("--budget", type=int_at_least(1), required=True, metavar="N",
                        help="number of samples to keep (guided and random alike)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (written atomically)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--model", help="'tiny', a local HF directory or a hub id (default: the SAEs' model_name)")
    parser.add_argument("--candidates", type=int_at_least(1), default=256,
                        help="candidates to generate (at least --budget)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generator and of the random baseline")
    parser.add_argument("--templates", metavar="FILE",
                        help="prompt openings, one per line, that the model continues into a request (default: a "
                             "built-in list of request openings: 'How do I', 'My friend wants to', ...)")
    parser.add_argument("--free-fraction", type=finite_float, default=0.25,
                        help="share of candidates whose request the model writes from nothing (0..1)")
    parser.add_argument("--max-prompt-tokens", type=int_at_least(1), default=32,
                        help="longest generated request, in tokens")
    parser.add_argument("--max-new-tokens", type=int_at_least(1), default=48, help="longest reply, in tokens")
    parser.add_argument("--temperature", type=finite_float, default=1.0, help="sampling temperature (0: greedy)")
    parser.add_argument("--top-p", type=finite_float, default=1.0, help="nucleus sampling mass, in (0, 1]")
    parser.add_argument("--max-tokens", type=int_at_least(1), default=256,
                        help="coverage: count the first tokens of each rendered sample")
    parser.add_argument("--batch-size", type=int_at_least(1), default=32, help="samples per forward / generation")


def _read_templates(path: str | None) -> tuple[str, ...]:
    from qwen_sae_jax.errors import UserError
    from qwen_sae_jax.posttrain.synthesis import DEFAULT_TEMPLATES
    from qwen_sae_jax.steer.sources import read_texts

    if path is None:
        return DEFAULT_TEMPLATES
    templates = tuple(t.strip() for t in read_texts(path) if t.strip())
    if not templates:
        raise UserError(f"--templates {path} holds no template")
    return templates


def _check_args(args) -> None:
    from qwen_sae_jax.atomic import check_destination
    from qwen_sae_jax.errors import UserError

    if args.budget > args.candidates:
        raise UserError(f"--budget {args.budget} is larger than --candidates {args.candidates}: there would be no "
                        "choice to make; raise --candidates")
    if not 0.0 <= args.free_fraction <= 1.0:
        raise UserError(f"--free-fraction must be in [0, 1], got {args.free_fraction}")
    if not args.temperature >= 0.0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")
    if not 0.0 < args.top_p <= 1.0:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")
    check_output_folder(args.out, "--out")
    check_destination(args.out, args.force)


def _rows(samples, activated, targets, order, covered) -> list[dict]:
    """The JSONL rows of the kept samples ``order``, each with its targets and the ones it newly covered."""
    from qwen_sae_jax.posttrain.synthesis import target_rows

    now = covered.copy()
    rows = []
    for i in order:
        s = samples[i]
        rows.append({"prompt": s.prompt, "completion": s.completion, "messages": s.messages, "source": s.source,
                     "targets": target_rows(targets, activated[i]),
                     "new_targets": target_rows(targets, activated[i] & ~now)})
        now |= activated[i]
    return rows


def _line(name: str, n: int, count: int, new: int, total: int, extra: str = "") -> str:
    return (f"  {name:<7} N={n:<4} coverage {count}/{total} ({100 * count / total:.1f}%)  newly covered {new}"
            f"{extra}")


def _write(out_dir, force: bool, files: dict) -> None:
    from qwen_sae_jax.atomic import atomic_directory

    with atomic_directory(out_dir, force=force) as tmp:
        for name, content in files.items():
            with open(tmp / name, "w", encoding="utf-8") as f:
                if name.endswith(".jsonl"):
                    f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in content)
                else:
                    json.dump(content, f, indent=1, ensure_ascii=False)


def run(args) -> int:
    from qwen_sae_jax.errors import UserError
    from qwen_sae_jax.lm import check_saes_fit, load_model
    from qwen_sae_jax.posttrain import synthesis as syn
    from qwen_sae_jax.steer.sources import load_hook_saes, model_name_of

    _check_args(args)
    targets = syn.read_targets(args.features)
    data = syn.read_dataset(args.data)
    templates = _read_templates(args.templates)
    saes = load_hook_saes(args.sae, args.hook, args.variant)
    syn.check_targets(targets, saes)
    saes = {h: saes[h] for h in dict.fromkeys(h for h, _ in targets)}
    lm = load_model(model_name_of(saes, args.model))
    check_saes_fit(lm, saes)
    measure = dict(batch_size=args.batch_size, max_tokens=args.max_tokens)
    existing = syn.covered_by(syn.activated_targets(lm, saes, targets, data, **measure))
    T = len(targets)
    per_hook = ", ".join(f"{h}: {sum(g == h for g, _ in targets)}" for h in saes)
    print(f"model {lm.name}; {T} target features ({per_hook})")
    print(f"existing data: {len(data)} samples cover {int(existing.sum())}/{T} targets "
          f"({100 * existing.mean():.1f}%); {T - int(existing.sum())} uncovered")
    if existing.all():
        print("every target is covered already: the kept samples will be the candidates activating the most targets")
    update, close = progress(args.candidates, "candidates", "cand")
    start = time.time()
    try:
        pool = syn.generate_candidates(lm, args.candidates, seed=args.seed, templates=templates,
                                       free_fraction=args.free_fraction, max_prompt_tokens=args.max_prompt_tokens,
                                       max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                       top_p=args.top_p, batch_size=args.batch_size, progress=update)
    finally:
        close()
    if len(pool) < args.budget:
        raise UserError(f"only {len(pool)} of the {args.candidates} generated candidates have a non-empty prompt, "
                        f"fewer than --budget {args.budget}; raise --candidates")
    activated = syn.activated_targets(lm, saes, targets, pool, **measure)
    reachable = syn.covered_by(activated) & ~existing
    print(f"candidates: {len(pool)} usable of {args.candidates} ({sum(s.source == 'free' for s in pool)} free) in "
          f"{time.time() - start:.1f} s; together they activate {int(reachable.sum())} of the "
          f"{T - int(existing.sum())} uncovered targets")
    kept = {"guided": syn.greedy_select(activated, existing, args.budget),
            "random": syn.random_select(len(pool), args.budget, args.seed)}
    summary: dict = {"features": args.features, "data": args.data, "model": lm.name, "budget": args.budget,
                     "candidates": len(pool), "seed": args.seed, "n_targets": T, "n_existing": len(data),
                     "targets": syn.target_rows(targets, [True] * T),
                     "existing_covered": existing.tolist(), "candidates_cover": syn.covered_by(activated).tolist()}
    print(f"kept {args.budget} of {len(pool)} candidates:")
    for name, order in kept.items():
        after = syn.covered_by(activated[order], existing)
        new = int((after & ~existing).sum())
        summary[name] = {"coverage": float(after.mean()), "covered": int(after.sum()), "newly_covered": new,
                         "covered_mask": after.tolist(), "kept": order}
        print(_line(name, args.budget, int(after.sum()), new, T, f"  (seed {args.seed})" if name == "random" else ""))
    _write(args.out, args.force, {"synthesized.jsonl": _rows(pool, activated, targets, kept["guided"], existing),
                                  "random.jsonl": _rows(pool, activated, targets, kept["random"], existing),
                                  "summary.json": summary})
    print(f"synthesis: n={args.budget} guided_coverage={summary['guided']['coverage']:.4f} "
          f"random_coverage={summary['random']['coverage']:.4f}")
    print(f"wrote {args.out}/synthesized.jsonl, random.jsonl, summary.json")
    return 0
