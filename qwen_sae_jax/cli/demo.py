"""`qwen-sae demo`: the main job on the embedded tiny Qwen3 (what `make demo` runs).

Trains ``configs/tiny.yaml``: one TopK SAE per layer x {residual stream, MLP out, attention out}, all from
one forward pass per batch, then prints the per-SAE table measured on held-out text and leaves the SAEs
in RUN_DIR/saes/.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from qwen_sae_jax.errors import UserError

HELP = "Train TopK SAEs on every layer/site of the embedded tiny Qwen3 and print their quality table."

REPO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(REPO_CONFIG), help="the training config to run")
    parser.add_argument("--run-dir", default=None, help="where the run is written (default: the config's run_dir, "
                        "runs/tiny, which the eval / steering examples read); a previous run there is replaced")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")


def run(args: argparse.Namespace) -> int:
    from qwen_sae_jax.cli.train import load_train_config
    from qwen_sae_jax.train.loop import train

    if Path(args.config).is_dir():
        raise UserError(f"demo config {args.config} is a folder; give a YAML file such as configs/tiny.yaml")
    if not Path(args.config).is_file():
        raise UserError(f"demo config {args.config} not found (run from a source checkout, or pass --config)")
    cfg = load_train_config(args.config, [*args.overrides] + ([f"run_dir={args.run_dir}"] if args.run_dir else []))
    run_dir = Path(cfg.run_dir)
    if run_dir.exists():
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"{run_dir} exists and is not a training run; choose another --run-dir")
        print(f"replacing the previous demo run in {run_dir}")
        shutil.rmtree(run_dir)
    names = ", ".join(sorted({v.name or v.architecture for v in cfg.saes}))
    print(f"qwen-sae demo: SAEs ({names}) on {', '.join(cfg.hooks)} of the embedded tiny Qwen3,\n"
          f"{cfg.train.total_tokens:,} activations each, one model forward per batch for all of them.\n")
    start = time.time()
    result = train(cfg)
    if result.interrupted:
        return 128 + (result.stopped_by or 2)
    minutes = (time.time() - start) / 60
    print(f"\nHeld-out quality of each SAE ({result.summary and next(iter(result.summary.values()))['eval_tokens']:,} "
          f"held-out activations; FVU = 1 - explained variance, L0 = active latents per token,\n"
          f"dead = latents that did not fire in the last dead_tokens_threshold training tokens):\n")
    print(result.table)
    print(f"\ndone in {minutes:.1f} min. SAEs: {run_dir / 'saes'}/<hook>__<variant>/ (load with "
          f"qwen_sae_jax.load_sae); metrics: {run_dir / 'metrics.jsonl'}; table: {run_dir / 'summary.json'}")
    return 0
