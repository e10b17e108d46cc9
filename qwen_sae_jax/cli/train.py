"""`qwen-sae train CONFIG.yaml [dotted.key=value ...]`: train SAEs as a config describes."""
from __future__ import annotations

import argparse
import sys

HELP = "Train SAEs on Qwen3 activations from a YAML config (+ dotted key=value overrides)."

EPILOG_HEAD = """\
examples:
  qwen-sae train configs/tiny.yaml
  qwen-sae train configs/tiny.yaml train.total_tokens=2e6 saes.0.k=64 run_dir=runs/k64
  qwen-sae train configs/tiny.yaml --resume                      # continue from the latest checkpoint
  qwen-sae train cfg.yaml --coordinator 10.0.0.2:1234 --num-processes 2 --process-id 0   # multi-host

Exit codes: 0 done, 2 bad input (one-line error), 130 / 143 stopped by SIGINT / SIGTERM after saving a
checkpoint (continue with --resume).

config keys (YAML nesting = dotted names; list items by index, e.g. saes.0.k):
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from qwen_sae_jax.config import format_help
    from qwen_sae_jax.train.config import TrainConfig

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG_HEAD + format_help(TrainConfig)
    parser.add_argument("config", help="YAML file with a TrainConfig (see the keys below)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides applied after the file, e.g. saes.0.k=64 data.ctx_len=256")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint in run_dir (starts fresh if there is none)")
    parser.add_argument("--coordinator", metavar="HOST:PORT",
                        help="multi-host: address of process 0 (same as distributed.coordinator)")
    parser.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    parser.add_argument("--process-id", type=int, help="multi-host: index of this process")


def load_train_config(path: str, overrides: list[str], args: argparse.Namespace | None = None):
    from qwen_sae_jax.config import load_config
    from qwen_sae_jax.train.config import TrainConfig

    extra = []
    if args is not None:
        for key, value in (("coordinator", args.coordinator), ("num_processes", args.num_processes),
                           ("process_id", args.process_id)):
            if value is not None:
                extra.append(f"distributed.{key}={value}")
    return load_config(TrainConfig, path, list(overrides) + extra)


def run(args: argparse.Namespace) -> int:
    from qwen_sae_jax.train.loop import train

    cfg = load_train_config(args.config, args.overrides, args)
    result = train(cfg, resume=args.resume)
    if result.interrupted:
        return 128 + (result.stopped_by or 2)
    if result.table:
        print(result.table)
        print(f"\nSAEs written to {result.run_dir / 'saes'}/ ; table in {result.run_dir / 'summary.json'}")
    sys.stdout.flush()
    return 0
