"""`qwen-sae contrast POS_FILE NEG_FILE`: rank SAE features by how much more they fire on one text set."""
from __future__ import annotations

import argparse
import json

from qwen_sae_jax.cli.options import check_output_file, int_at_least

HELP = "rank SAE features by the difference in mean activation / firing rate between two text files"

EPILOG = """\
Files: .jsonl (the --column field of each line) or plain text (one text per non-empty line).
Positions: 'last' = the latents at each text's last token (with --chat: the end of the generation
prompt); 'mean' = the latents averaged over all of a text's tokens, then over texts.
Scores: mean_diff = mean activation (POS) - (NEG); rate_diff = firing rate (POS) - (NEG).

example:
  qwen-sae contrast harmful.txt harmless.txt --sae runs/tiny --hook layers.2 --chat --top 10
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("pos_file", metavar="POS_FILE", help="texts the features should fire on")
    parser.add_argument("neg_file", metavar="NEG_FILE", help="contrasting texts")
    parser.add_argument("--sae", action="append", required=True, metavar="PATH",
                        help="an SAE (any supported format) or a training run directory (repeatable)")
    parser.add_argument("--hook", action="append", metavar="HOOK", help="hook point(s) to rank (default: every SAE)")
    parser.add_argument("--variant", help="SAE variant when a run directory has several per hook")
    parser.add_argument("--model", help="'tiny', a local HF directory or a hub id (default: the SAEs' model_name)")
    parser.add_argument("--column", default="text", help="JSON field holding the text in .jsonl files")
    parser.add_argument("--chat", action="store_true",
                        help="render each text as a chat user turn (+ generation prompt)")
    parser.add_argument("--position", choices=("last", "mean"), default="last", help="which reduction to rank by")
    parser.add_argument("--by", choices=("mean_diff", "rate_diff"), default="mean_diff", help="ranking score")
    parser.add_argument("--top", type=int_at_least(1), default=20, help="features shown per hook")
    parser.add_argument("--max-tokens", type=int_at_least(1), default=256,
                        help="keep the first tokens of longer texts")
    parser.add_argument("--batch-size", type=int_at_least(1), default=16, help="texts per forward pass")
    parser.add_argument("--json", metavar="OUT", help="also write the full top lists (both positions) as JSON")


def format_table(rows: list[dict]) -> str:
    lines = [f"{'rank':>4} {'feature':>8} {'mean_diff':>10} {'rate_diff':>10} {'mean_pos':>9} {'mean_neg':>9} "
             f"{'rate_pos':>8} {'rate_neg':>8}"]
    for r, row in enumerate(rows, 1):
        lines.append(f"{r:>4} {row['feature']:>8} {row['mean_diff']:>10.4f} {row['rate_diff']:>10.3f} "
                     f"{row['mean_pos']:>9.4f} {row['mean_neg']:>9.4f} {row['rate_pos']:>8.3f} {row['rate_neg']:>8.3f}")
    return "\n".join(lines)


def run(args) -> int:
    from qwen_sae_jax.atomic import atomic_file
    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.steer.contrast import rank_features
    from qwen_sae_jax.steer.sources import load_hook_saes, model_name_of, read_texts

    if args.json:
        check_output_file(args.json, "--json")
    pos, neg = read_texts(args.pos_file, args.column), read_texts(args.neg_file, args.column)
    saes = load_hook_saes(args.sae, args.hook, args.variant)
    lm = load_model(model_name_of(saes, args.model))
    for hook in saes:
        lm.resolve_hooks([hook])
    result = rank_features(lm, saes, pos, neg, chat=args.chat, batch_size=args.batch_size, max_tokens=args.max_tokens)
    print(f"model {lm.name}; {len(pos)} positive vs {len(neg)} negative texts; position {args.position}, "
          f"ranked by {args.by}")
    for hook, by_pos in result.items():
        print(f"\n== {hook} (d_sae {saes[hook].cfg.d_sae})")
        print(format_table(by_pos[args.position].top(args.top, by=args.by)))
    if args.json:
        out = {hook: {p: {"mean_diff": c.top(args.top, "mean_diff"), "rate_diff": c.top(args.top, "rate_diff")}
                      for p, c in by_pos.items()} for hook, by_pos in result.items()}
        with atomic_file(args.json) as tmp, open(tmp, "w") as f:
            json.dump({"pos_file": args.pos_file, "neg_file": args.neg_file, "n_pos": len(pos), "n_neg": len(neg),
                       "chat": args.chat, "top": out}, f, indent=1)
        print(f"\nwrote {args.json}")
    return 0
