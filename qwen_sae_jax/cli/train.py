"""`qwen-sae train CONFIG.yaml [dotted.key=value ...]`: train SAEs as a config describes."""
from __future__ import annotations

import argparse
import sys

from qwen_sae_jax.cli.options import add_run_arguments, byte_size, distributed_overrides

HELP = "Train SAEs on Qwen3 / Qwen3.5 activations from a YAML config (+ dotted key=value overrides)."

EPILOG_HEAD = """\
examples:
  qwen-sae train configs/tiny.yaml
  qwen-sae train configs/tiny.yaml train.total_tokens=2e6 saes.0.k=64 run_dir=runs/k64
  qwen-sae train configs/tiny.yaml --resume                      # continue from the latest checkpoint
  qwen-sae train cfg.yaml --coordinator 10.0.0.2:1234 --num-processes 2 --process-id 0   # multi-host
  qwen-sae train configs/qwen-scope-1.7b.yaml --plan --devices 32 --device-memory 16GB   # will it fit?

Before loading the model, train checks the memory plan (docs/launch.md): a run whose estimate exceeds the
devices' memory stops with one line naming its biggest part and what would fit (--ignore-memory-plan: go on).

Exit codes: 0 done, 2 bad input (one-line error), 130 / 143 stopped by SIGINT / SIGTERM after saving a
checkpoint (continue with --resume).

config keys (YAML nesting = dotted names; list items by index, e.g. saes.0.k):
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from qwen_sae_jax.config import format_help
    from qwen_sae_jax.train.config import TrainConfig

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG_HEAD + format_help(TrainConfig)
    add_run_arguments(parser, "YAML file with a TrainConfig (see the keys below)", "saes.0.k=64 data.ctx_len=256")
    parser.add_argument("--plan", action="store_true",
                        help="print the memory plan (per-device bytes of every part, what fits) and exit; reads "
                             "no weights and allocates nothing on the devices")
    parser.add_argument("--devices", type=int, metavar="N",
                        help="--plan: total number of devices to plan for (default: the devices JAX sees)")
    parser.add_argument("--device-memory", type=byte_size, metavar="SIZE",
                        help="memory of one device, e.g. 16GB or 80GiB (default: the devices' reported limit; on "
                             "CPU the host RAM divided over the local devices)")
    parser.add_argument("--local-devices", type=int, metavar="N",
                        help="--plan: devices per process / host, for the host parts (default: this machine's "
                             "devices, at most --devices; e.g. 4 on a TPU v4/v5p host, 8 on an 8-GPU host)")
    parser.add_argument("--platform", choices=("cpu", "gpu", "tpu"),
                        help="--plan: the devices planned for (default: this machine's). On cpu the devices share "
                             "the host RAM, so the host parts count against it too")
    parser.add_argument("--model-config", metavar="CONFIG_JSON",
                        help="--plan: the model's config.json (default: found from model.name; a hub id needs "
                             "only its config.json, from the HF cache or the hub)")
    parser.add_argument("--ignore-memory-plan", action="store_true",
                        help="train even when the memory plan says the run does not fit")


def load_train_config(path: str, overrides: list[str], args: argparse.Namespace | None = None):
    from qwen_sae_jax.config import load_config
    from qwen_sae_jax.train.config import TrainConfig

    return load_config(TrainConfig, path, list(overrides) + distributed_overrides(args))


def run(args: argparse.Namespace) -> int:
    from qwen_sae_jax.train.loop import train

    cfg = load_train_config(args.config, args.overrides, args)
    if args.plan:
        from qwen_sae_jax.train.memory import report
        print(report(cfg, num_devices=args.devices, device_memory=args.device_memory,
                     model_config_path=args.model_config, platform=args.platform,
                     local_devices=args.local_devices))
        return 0
    if any(v is not None for v in (args.devices, args.model_config, args.platform, args.local_devices)):
        from qwen_sae_jax.errors import UserError
        raise UserError("--devices, --local-devices, --platform and --model-config only apply with --plan "
                        "(training uses the devices JAX sees and the model's own config)")
    result = train(cfg, resume=args.resume, device_memory=args.device_memory,
                   check_memory=not args.ignore_memory_plan)
    if result.interrupted:
        return 128 + (result.stopped_by or 2)
    if result.table:
        print(result.table)
        print(f"\nSAEs written to {result.run_dir / 'saes'}/ ; table in {result.run_dir / 'summary.json'}")
    sys.stdout.flush()
    return 0
