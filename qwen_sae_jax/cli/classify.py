"""`qwen-sae classify POS_FILE NEG_FILE --sae SAE`: Qwen-Scope's feature classifier (top1-diff + OR rule)."""
from __future__ import annotations

import argparse
import json

from qwen_sae_jax.cli.options import check_output_file, finite_float, int_at_least, open_fraction

HELP = ("Pick the SAE features whose firing rate differs most between two text sets (top1-diff), classify by an "
        "OR rule over them, report precision / recall / F1 on a held-out split.")


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options shared with `qwen-sae redundancy`: the SAE, the model, how texts are read and judged."""
    parser.add_argument("--sae", required=True, help="an SAE folder / file, or a run directory / collection "
                        "(then choose one with --hook)")
    parser.add_argument("--hook", help="which SAE of a collection: its name, hook name or SAELens-style alias "
                        "(blocks.N.hook_resid_post, ...; globs allowed)")
    parser.add_argument("--model", help="model override ('tiny', HF directory, hub id); default: the SAE's")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="model compute dtype")
    parser.add_argument("--text-column", default="text", help="JSON/parquet column holding the text")
    parser.add_argument("--text-unit", default="line", choices=["line", "paragraph", "document"],
                        help="how plain-text files are cut into texts")
    parser.add_argument("--chat", action="store_true", help="render each text as a user turn with the chat template")
    parser.add_argument("--max-len", type=int_at_least(1), default=256,
                        help="tokens per text (longer texts are truncated)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=16, help="texts per forward")
    parser.add_argument("--threshold", type=finite_float, default=0.0,
                        help="a feature fires on a text when its activation exceeds this at any token")
    parser.add_argument("--json", metavar="PATH", help="also write the full result as JSON")


def check_inputs(args, files: list[str], minimum: int = 1) -> None:
    """Refuse, before the model loads, text files that are missing, empty, not UTF-8 or hold fewer than
    ``minimum`` texts, and output paths that cannot be written."""
    from qwen_sae_jax.analysis.corpus import read_texts
    from qwen_sae_jax.errors import UserError

    for path in files:
        texts = read_texts(path, text_column=args.text_column, text_unit=args.text_unit)
        if minimum > len(texts):
            raise UserError(f"{path} holds {len(texts)} text(s); at least {minimum} are needed (one to select "
                            "features on, one held out)")
    for option in ("json", "plot"):
        if getattr(args, option, None):
            check_output_file(getattr(args, option), f"--{option}")


def write_json(path: str, payload: dict) -> None:
    """``payload`` as indented JSON at ``path``, through a temporary file renamed into place."""
    from qwen_sae_jax.atomic import atomic_file

    with atomic_file(path) as tmp, open(tmp, "w") as fh:
        json.dump(payload, fh, indent=2)


def footprints_of(args, lm, sae, path: str):
    from qwen_sae_jax.analysis.corpus import read_texts
    from qwen_sae_jax.analysis.footprint import text_footprints

    texts = read_texts(path, text_column=args.text_column, text_unit=args.text_unit)
    fp = text_footprints(lm, sae, texts, max_len=args.max_len, batch_size=args.batch_size,
                         threshold=args.threshold, chat=args.chat)
    if fp.truncated:
        print(f"note: {fp.truncated} of {len(texts)} texts in {path} truncated to {args.max_len} tokens")
    return fp


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pos_file", metavar="POS_FILE", help="texts of the positive class")
    parser.add_argument("neg_file", metavar="NEG_FILE", help="texts of the negative class")
    add_common(parser)
    parser.add_argument("--n-features", type=int_at_least(1),
                        help="use exactly this many top features (default: the count "
                             "in 1..--max-features with the best F1 on the discovery split)")
    parser.add_argument("--max-features", type=int_at_least(1), default=10, help="largest feature count tried")
    parser.add_argument("--test-fraction", type=open_fraction, default=0.3,
                        help="share of each class held out (strictly between 0 and 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")


def run(args: argparse.Namespace) -> int:
    from qwen_sae_jax.analysis.classifier import fit_feature_classifier
    from qwen_sae_jax.analysis.loading import load_model_and_sae

    check_inputs(args, [args.pos_file, args.neg_file], minimum=2)
    lm, name, sae = load_model_and_sae(args.sae, args.hook, args.model, args.dtype)
    pos = footprints_of(args, lm, sae, args.pos_file)
    neg = footprints_of(args, lm, sae, args.neg_file)
    result = fit_feature_classifier(pos.fired, neg.fired, n_features=args.n_features,
                                    max_features=args.max_features, test_fraction=args.test_fraction, seed=args.seed)
    print(f"SAE {name} ({sae.cfg.hook_name}, d_sae {sae.cfg.d_sae}) on {lm.name}; positive: {args.pos_file} "
          f"({pos.n_texts} texts), negative: {args.neg_file} ({neg.n_texts} texts)")
    how = "given" if result.chosen_by == "given" else f"best discovery F1 over 1..{args.max_features}"
    print(f"top1-diff features, OR rule over the top {result.n_features} ({how}); "
          f"discovery split {result.n_train[0]}+{result.n_train[1]}, held out {result.n_test[0]}+{result.n_test[1]}:")
    print(f"  {'feature':>8} {'rate pos':>9} {'rate neg':>9} {'diff':>7}")
    for f, rp, rn, d in zip(result.features, result.rate_pos, result.rate_neg, result.rate_diff):
        print(f"  {f:>8} {rp:>9.3f} {rn:>9.3f} {d:>+7.3f}")
    print(f"  {'split':<10} {'precision':>9} {'recall':>7} {'F1':>6} {'accuracy':>9}")
    for split, m in (("discovery", result.train), ("held out", result.test)):
        print(f"  {split:<10} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f} {m['accuracy']:>9.3f}")
    if args.json:
        write_json(args.json, {"sae": name, "hook": sae.cfg.hook_name, "model": lm.name, "pos_file": args.pos_file,
                               "neg_file": args.neg_file, "threshold": args.threshold, **result.to_dict()})
        print(f"wrote {args.json}")
    return 0
