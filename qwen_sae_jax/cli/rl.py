"""`qwen-sae rl CONFIG.yaml [dotted.key=value ...]`: GRPO with a text repetition reward and an SAE feature penalty."""
from __future__ import annotations

import argparse

from qwen_sae_jax.cli.options import add_run_arguments, distributed_overrides

HELP = "Train a model with GRPO against repetition (text n-gram reward and/or SAE feature penalty) from a YAML config."

EPILOG_HEAD = """\
examples:
  qwen-sae rl configs/rl-tiny.yaml
  qwen-sae rl configs/rl-tiny.yaml train.steps=40 rollout.group_size=8 run_dir=runs/rl-40
  qwen-sae rl configs/rl-tiny.yaml reward.sae.features=rep_features.json \\
      reward.sae.saes=[runs/tiny/saes/layers.2__topk-k32] reward.sae.coefficient=0.1     # + SAE term
  qwen-sae rl configs/rl-tiny.yaml --resume                      # continue from the latest checkpoint

reward = -(reward.repetition.coefficient * repeated n-gram fraction + reward.sae.coefficient * SAE penalty);
docs/posttrain.md ("RL with SAE signals") has the formulas and the features file.

Exit codes: 0 done, 2 bad input (one-line error), 130 / 143 stopped by SIGINT / SIGTERM after saving a
checkpoint (continue with --resume).

config keys (YAML nesting = dotted names):
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from qwen_sae_jax.config import format_help
    from qwen_sae_jax.posttrain.rl_config import RLConfig

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG_HEAD + format_help(RLConfig)
    add_run_arguments(parser, "YAML file with an RLConfig (see the keys below)", "train.steps=50 optim.lr=1e-5")


def run(args: argparse.Namespace) -> int:
    from qwen_sae_jax.config import load_config
    from qwen_sae_jax.posttrain.rl_config import RLConfig
    from qwen_sae_jax.posttrain.rl_loop import run_rl

    cfg = load_config(RLConfig, args.config, list(args.overrides) + distributed_overrides(args))
    result = run_rl(cfg, resume=args.resume)
    if result.interrupted:
        return 128 + (result.stopped_by or 2)
    return 0
