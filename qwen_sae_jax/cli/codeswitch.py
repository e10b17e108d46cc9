"""`qwen-sae codeswitch`: unexpected code-switching of a chat model (qwen_sae_jax/posttrain/codeswitch.py)."""
from __future__ import annotations

import argparse
import json
import time

from qwen_sae_jax.cli.options import check_output_folder, finite_float, int_at_least, progress

HELP = "measure unexpected code-switching: how often a model's chat replies switch to another language"

EPILOG = """\
What it measures:
  each prompt (one user turn, rendered with the model's chat template) is answered greedily (--greedy, the
  default) or --samples N times at --temperature / --top-p (sample i seeded --seed + i); --language is the
  language the replies should be in, and a reply *switches* when it holds a letter of the other language:
    en  replies expected in English; switching = any CJK ideograph (tokens: those writing Chinese)
    zh  replies expected in Chinese; switching = any Latin letter (tokens: those holding one)
  Printed: the share of replies that switch (rate), the share of generated tokens in the other language (token
  share, the end-of-turn token counted), the share of letters (CJK ideographs + Latin letters) in the other
  language (char share), the share of replies mostly in the other language (wrong language), and --examples
  switching replies. Last line: codeswitch: language=L rate=X token_share=Y n=N

Default prompts: en: the embedded model's 140 held-out English prompts (tiny:heldout/harmless_prompts.jsonl
without the translation ones, which ask for Chinese words); zh: 120 Chinese prompts built from its held-out
Chinese documents (qwen_sae_jax/assets/codeswitch/zh_prompts.jsonl). --prompts: a .jsonl file (field --column)
or a text file (one prompt per line); 'tiny:PATH' is a file inside the embedded model's folder.

--out DIR writes DIR/codeswitch.json (atomically; a previous one is replaced): the figures, the settings, the
examples and, per prompt, every reply with its counts.

example:
  qwen-sae codeswitch --model runs/sft/hf                          # greedy, default English prompts
  qwen-sae codeswitch --model runs/sft/hf --samples 4 --temperature 1 --out runs/sft/eval
  qwen-sae codeswitch --model tiny --language zh --prompts my_prompts.jsonl --column prompt
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--model", required=True,
                        help="the model: 'tiny', a local HF folder (e.g. a fine-tuning run's RUN/hf) or a hub id")
    parser.add_argument("--language", default="en", metavar="{en,zh}",
                        help="the language the replies should be in (the prompts'): en or zh (default: en)")
    parser.add_argument("--prompts", metavar="FILE",
                        help="prompt file (.jsonl with --column, or one prompt per line); default: the held-out "
                             "prompts of --language (see below)")
    parser.add_argument("--column", default="prompt", help="field of a .jsonl --prompts file holding the prompt")
    parser.add_argument("--limit", type=int_at_least(1), metavar="N", help="use only the first N prompts")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="one greedy reply per prompt (the default)")
    mode.add_argument("--samples", type=int_at_least(1), metavar="N",
                      help="N sampled replies per prompt (at --temperature / --top-p) instead of one greedy reply")
    parser.add_argument("--temperature", type=finite_float, metavar="T",
                        help="sampling temperature, > 0 (with --samples; default 1.0)")
    parser.add_argument("--top-p", type=finite_float, metavar="P",
                        help="nucleus sampling mass, in (0, 1] (with --samples; default 1.0: off)")
    parser.add_argument("--max-new-tokens", type=int_at_least(1), default=32, metavar="N",
                        help="longest reply, in tokens (the end-of-turn token included)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first sample (sample i: seed + i)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=64, metavar="N",
                        help="prompts per generation batch")
    parser.add_argument("--examples", type=int_at_least(0), default=3, metavar="N",
                        help="switching replies to print and store")
    parser.add_argument("--out", metavar="DIR", help="write DIR/codeswitch.json (atomically)")
    parser.add_argument("--dtype", default="float32", help="compute dtype of the model (float32, bfloat16)")


def _settings(args) -> tuple[int, float, float]:
    """``(samples, temperature, top_p)`` from the options; one-line errors for combinations that do not fit."""
    from qwen_sae_jax.errors import UserError

    if args.samples is None:
        for option, value in (("--temperature", args.temperature), ("--top-p", args.top_p)):
            if value is not None:
                raise UserError(f"{option} applies to sampled replies: add --samples N (without it replies are "
                                "greedy)")
        return 1, 0.0, 1.0
    temperature = 1.0 if args.temperature is None else args.temperature
    top_p = 1.0 if args.top_p is None else args.top_p
    if not temperature > 0.0:
        raise UserError(f"--temperature must be > 0 with --samples, got {temperature} (greedy replies: --greedy)")
    if not 0.0 < top_p <= 1.0:
        raise UserError(f"--top-p must be in (0, 1], got {top_p}")
    return args.samples, temperature, top_p


def _prompts(args) -> tuple[list[str], str]:
    from qwen_sae_jax.posttrain import codeswitch as cs

    if args.prompts is None:
        prompts = cs.default_prompts(args.language)
        source = f"default held-out {cs.NAMES[args.language]} prompts"
    else:
        prompts, source = cs.read_prompts(args.prompts, args.column), args.prompts
    return prompts[:args.limit] if args.limit else prompts, source


def _print(result, args, seconds: float) -> None:
    from qwen_sae_jax.posttrain.codeswitch import NAMES

    s = result.summary()
    decoding = "greedy" if s["greedy"] else f"T={s['temperature']:g} top-p={s['top_p']:g} x{s['samples']}"
    print(f"{'language':<9} {'other':<6} {'decoding':<22} {'replies':>7} {'switched':>8} {'rate':>6} "
          f"{'token share':>11} {'char share':>10} {'wrong lang':>10}")
    print(f"{s['language']:<9} {s['other']:<6} {decoding:<22} {s['n_replies']:>7} {s['switched_replies']:>8} "
          f"{s['rate']:>6.3f} {s['token_share']:>11.3f} {s['char_share']:>10.3f} {s['wrong_language']:>10.3f}")
    examples = result.examples(args.examples)
    if examples:
        print(f"examples of replies holding {NAMES[result.other]}:")
        for e in examples:
            seed = f" (seed {e['seed']})" if not s["greedy"] else ""
            print(f"  {e['prompt']!r} -> {e['reply']!r}{seed}")
    print(f"({seconds:.1f} s)")


def run(args) -> int:
    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.posttrain import codeswitch as cs

    cs.check_language(args.language)
    samples, temperature, top_p = _settings(args)
    if args.out is not None:
        check_output_folder(args.out, "--out")
    prompts, source = _prompts(args)
    lm = load_model(args.model, dtype=args.dtype)
    decoding = "greedy" if samples == 1 and temperature == 0.0 else \
        f"{samples} sample(s) at temperature {temperature:g}, top-p {top_p:g}, seed {args.seed}"
    print(f"model {lm.name}; {len(prompts)} prompts ({source}); replies expected in {cs.NAMES[args.language]}; "
          f"{decoding}; at most {args.max_new_tokens} new tokens")
    update, close = progress(samples * -(-len(prompts) // args.batch_size), "generation", "batch", "batches")
    start = time.time()
    try:
        result = cs.measure(lm, prompts, args.language, samples=samples, temperature=temperature, top_p=top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size,
                            progress=update)
    finally:
        close()
    _print(result, args, time.time() - start)
    if args.out is not None:
        _write(args.out, {"model": lm.name, "prompts": source, **result.to_json(args.examples)})
    print(f"codeswitch: language={args.language} rate={result.rate:.4f} token_share={result.token_share:.4f} "
          f"n={len(result.replies)}")
    return 0


def _write(out: str, content: dict) -> None:
    from pathlib import Path

    from qwen_sae_jax.atomic import atomic_file

    path = Path(out) / "codeswitch.json"
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=1, ensure_ascii=False)
    print(f"wrote {path}")
