"""`qwen-sae demo`: the main job on an embedded tiny model (`make demo` runs it on the tiny Qwen3).

Trains ``configs/tiny.yaml`` (``--model tiny``, the default) or ``configs/tiny-qwen3.5.yaml`` (``--model
tiny-qwen3.5``, the hybrid Qwen3.5): one TopK SAE per layer x {residual stream, MLP out, token-mixer out}, all
from one forward pass per batch, then prints the per-SAE table measured on held-out text (with each layer's kind)
and leaves the SAEs in RUN_DIR/saes/.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from qwen_sae_jax.errors import UserError

HELP = ("Train TopK SAEs on every layer/site of an embedded tiny model (the Qwen3 by default; --model tiny-qwen3.5: "
        "the hybrid Qwen3.5) and print their quality table.")

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# --model -> (its config in a source checkout, how the header names the model)
MODELS = {"tiny": ("tiny.yaml", "the embedded tiny Qwen3"),
          "tiny-qwen3.5": ("tiny-qwen3.5.yaml", "the embedded tiny Qwen3.5 (Gated DeltaNet + full attention)")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", choices=list(MODELS), default="tiny",
                       help="the embedded model to train on: tiny (Qwen3: configs/tiny.yaml, what `make demo` runs) "
                            "or tiny-qwen3.5 (hybrid Qwen3.5, Gated DeltaNet on layers 0 and 2: "
                            "configs/tiny-qwen3.5.yaml)")
    which.add_argument("--config", default=None, help="a training config to run instead of --model's")
    parser.add_argument("--run-dir", default=None, help="where the run is written (default: the config's run_dir, "
                        "runs/tiny or runs/tiny-qwen3.5, which the eval / steering examples read); a previous run "
                        "there is replaced")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")


def run(args: argparse.Namespace) -> int:
    from qwen_sae_jax.cli.train import load_train_config
    from qwen_sae_jax.train.loop import train

    config = args.config or str(CONFIGS / MODELS[args.model][0])
    if Path(config).is_dir():
        raise UserError(f"demo config {config} is a folder; give a YAML file such as configs/tiny.yaml")
    if not Path(config).is_file():
        raise UserError(f"demo config {config} not found (run from a source checkout, or pass --config)")
    cfg = load_train_config(config, [*args.overrides] + ([f"run_dir={args.run_dir}"] if args.run_dir else []))
    run_dir = Path(cfg.run_dir)
    if run_dir.exists():
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"{run_dir} exists and is not a training run; choose another --run-dir")
        print(f"replacing the previous demo run in {run_dir}")
        shutil.rmtree(run_dir)
    names = ", ".join(sorted({v.name or v.architecture for v in cfg.saes}))
    model = MODELS[cfg.model.name][1] if cfg.model.name in MODELS else f"model {cfg.model.name}"
    print(f"qwen-sae demo: SAEs ({names}) on {', '.join(cfg.hooks)} of {model},\n"
          f"{cfg.train.total_tokens:,} activations each, one model forward per batch for all of them.\n")
    start = time.time()
    result = train(cfg)
    if result.interrupted:
        return 128 + (result.stopped_by or 2)
    minutes = (time.time() - start) / 60
    print(f"\nHeld-out quality of each SAE ({result.summary and next(iter(result.summary.values()))['eval_tokens']:,} "
          f"held-out activations; FVU = 1 - explained variance, L0 = active latents per token,\n"
          f"dead = latents that did not fire in the last dead_tokens_threshold training tokens; kind = the layer's "
          f"token mixer:\nfull attention, or linear = Gated DeltaNet):\n")
    print(result.table)
    print(f"\ndone in {minutes:.1f} min. SAEs: {run_dir / 'saes'}/<hook>__<variant>/ (load with "
          f"qwen_sae_jax.load_sae); metrics: {run_dir / 'metrics.jsonl'}; table: {run_dir / 'summary.json'}")
    return 0
