"""`qwen-sae sft CONFIG.yaml [dotted.key=value ...]`: full-parameter SFT (optionally SASFT) of a model."""
from __future__ import annotations

import argparse

from qwen_sae_jax.cli.options import add_run_arguments, distributed_overrides

HELP = "Fine-tune a model on chat data (full-parameter SFT, optionally SASFT) from a YAML config."

EPILOG_HEAD = """\
examples:
  qwen-sae sft configs/sft-tiny.yaml
  qwen-sae sft configs/sft-tiny.yaml train.steps=200 optim.lr=1e-4 run_dir=runs/sft-200
  qwen-sae sft configs/sft-tiny.yaml sasft.features=feats.json sasft.saes=[runs/tiny/saes/layers.2__topk-k32] \\
      sasft.coefficient=0.1                                       # SASFT (docs/posttrain.md)
  qwen-sae sft configs/sft-tiny.yaml --resume                     # continue from the latest checkpoint

Exit codes: 0 done, 2 bad input (one-line error), 130 / 143 stopped by SIGINT / SIGTERM after saving a
checkpoint (continue with --resume).

config keys (YAML nesting = dotted names):
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from qwen_sae_jax.config import format_help
    from qwen_sae_jax.posttrain.config import SFTConfig

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG_HEAD + format_help(SFTConfig)
    add_run_arguments(parser, "YAML file with an SFTConfig (see the keys below)", "train.steps=50 optim.lr=1e-4")


def run(args: argparse.Namespace) -> int:
    from qwen_sae_jax.config import load_config
    from qwen_sae_jax.posttrain.config import SFTConfig
    from qwen_sae_jax.posttrain.loop import run_sft

    cfg = load_config(SFTConfig, args.config, list(args.overrides) + distributed_overrides(args))
    result = run_sft(cfg, resume=args.resume)
    if result.interrupted:
        return 128 + (result.stopped_by or 2)
    return 0
