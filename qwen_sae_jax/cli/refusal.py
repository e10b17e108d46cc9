"""`qwen-sae refusal CONFIG [key=value ...]`: the refusal-steering case study, written as a report."""
from __future__ import annotations

import argparse

HELP = "refusal-steering case study: rank features on harmful vs harmless prompts, steer, report (md+json+png)"

EPILOG_HEAD = """\
examples:
  qwen-sae refusal configs/refusal-tiny.yaml
  qwen-sae refusal configs/refusal-tiny.yaml saes=[runs/k64] hooks=[layers.2] out_dir=runs/refusal-k64

Writes OUT_DIR/report.md, report.json, refusal_vs_alpha.png, fluency_vs_alpha.png, reverse.png.

config keys (YAML nesting = dotted names):
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from qwen_sae_jax.config import format_help
    from qwen_sae_jax.steer.refusal import RefusalConfig

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG_HEAD + format_help(RefusalConfig)
    parser.add_argument("config", help="YAML file with a RefusalConfig (see the keys below)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. top_features=5")


def run(args) -> int:
    import os

    from qwen_sae_jax.config import load_config
    from qwen_sae_jax.errors import UserError
    from qwen_sae_jax.steer.refusal import RefusalConfig, run_study
    from qwen_sae_jax.steer.refusal_report import check_out_dir, write_report

    if os.path.isdir(args.config):
        raise UserError(f"config {args.config} is a folder; give a YAML file (e.g. configs/refusal-tiny.yaml)")
    cfg = load_config(RefusalConfig, args.config, args.overrides)
    check_out_dir(cfg.out_dir)      # before minutes of generation
    results = run_study(cfg, log=lambda line: print(line, flush=True))
    paths = write_report(results, cfg.out_dir)
    v = results["verdict"]
    best = v["best"]
    if best is not None:
        print(f"target (>= {v['target']:.0%} refusal on held-out harmless, random controls within "
              f"{v['near_baseline']:.0%} of the {v['baseline_harmless']:.0%} baseline): "
              f"{'MET' if v['met'] else 'NOT MET'}; best: {best['hook']} feature {best['feature']} alpha "
              f"{best['alpha']:g} -> {best['refusal_rate']:.0%} (random mean "
              f"{'-' if best['random_mean'] is None else format(best['random_mean'], '.0%')})")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
