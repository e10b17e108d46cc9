"""The memory plan against measured peaks: `qwen-sae train` runs at real SAE widths on CPU, their peak RSS next
to the plan's estimate for the whole process (devices + host, the CPU figure the plan compares with the RAM).

    python benchmarks/memory_plan.py [--only NAME] [--keep DIR]

A random Qwen3-shaped checkpoint (d_model 1024, 8 layers, bf16; the embedded model's tokenizer) is written with
transformers; each config trains a few steps on the embedded model's held-out text through the real CLI in a
fresh process (so the peak is that run's), including the checkpoint and the end-of-run evaluation.
Last line: ``memory_plan: ratios=NAME:measured/estimate,... worst=X`` (target: every ratio in [0.8, 1.2]).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# name -> (devices, overrides of configs/tiny.yaml)
CONFIGS = {
    "24 SAEs x 4K, bf16": (1, ["hooks=[blocks.*.hook_resid_post,layers.*.mlp,layers.*.self_attn]",
                               "saes.0.expansion_factor=null", "saes.0.d_sae=4096", "saes.0.k=32",
                               "model.dtype=bfloat16", "train.batch_size=1024", "buffer.size=16384",
                               "data.batch_size=16", "data.ctx_len=128"]),
    "1 SAE x 32K, f32": (1, ["hooks=[blocks.4.hook_resid_post]", "saes.0.expansion_factor=null",
                             "saes.0.d_sae=32768", "saes.0.k=50", "train.batch_size=4096", "buffer.size=32768",
                             "data.batch_size=32", "data.ctx_len=128"]),
    "8 SAEs x 4K, 8 devices (4 x 2)": (8, ["hooks=[blocks.*.hook_resid_post]", "saes.0.expansion_factor=null",
                                           "saes.0.d_sae=4096", "saes.0.k=32", "train.batch_size=2048",
                                           "buffer.size=16384", "data.batch_size=16", "data.ctx_len=128",
                                            "mesh.data=4", "mesh.model=2"]),
}
STEPS = 6


def write_model(out: Path) -> None:
    """A random Qwen3 (d_model 1024, 8 layers) in bf16 with the embedded model's tokenizer."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from qwen_sae_jax.lm import TINY_DIR
    tiny = json.loads((Path(TINY_DIR) / "config.json").read_text())
    config = Qwen3Config(vocab_size=tiny["vocab_size"], hidden_size=1024, intermediate_size=3072,
                         num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=8, head_dim=64,
                         max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=tiny.get("bos_token_id"), eos_token_id=tiny.get("eos_token_id"))
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    for name in os.listdir(TINY_DIR):
        if name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(Path(TINY_DIR) / name, out / name)


def overrides_for(name: str, model_dir: Path, run_dir: Path) -> list[str]:
    _, extra = CONFIGS[name]
    batch = int(next(o.split("=")[1] for o in extra if o.startswith("train.batch_size=")))
    return extra + [f"model.name={model_dir}", f"run_dir={run_dir}", f"train.total_tokens={STEPS * batch}",
                    "checkpoint.every=3", "log.every=3", "eval.tokens=4096"]


def estimate(name: str, overrides: list[str]) -> float:
    """The plan's bytes for the whole process (CPU: per device with the host share, times the devices)."""
    from qwen_sae_jax.config import load_config
    from qwen_sae_jax.models.registry import read_config
    from qwen_sae_jax.train.config import TrainConfig
    from qwen_sae_jax.train.memory import plan_memory
    devices, _ = CONFIGS[name]
    cfg = load_config(TrainConfig, REPO / "configs" / "tiny.yaml", overrides)
    model = next(o.split("=", 1)[1] for o in overrides if o.startswith("model.name="))
    plan = plan_memory(cfg, read_config(model), devices, local_devices=devices, platform="cpu")
    return plan.needed() * devices


def measure(name: str, overrides: list[str]) -> float:
    """Peak RSS (bytes) of `qwen-sae train` in a fresh process."""
    devices, _ = CONFIGS[name]
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}" if devices > 1 else ""
    cmd = [sys.executable, "-m", "qwen_sae_jax.cli", "train", str(REPO / "configs" / "tiny.yaml"), *overrides,
           "--ignore-memory-plan"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:          # interrupted: never leave a multi-GB training process behind
        proc.kill()
        raise
    err = proc.stderr.read()
    if status != 0:
        raise SystemExit(f"{name}: train failed ({status}):\n{err[-2000:]}")
    return usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(CONFIGS), help="run one config")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR (kept) instead of a temporary folder")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="memory_plan_"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "qwen3-1024x8"
    if not (model_dir / "config.json").exists():
        write_model(model_dir)
    ratios = {}
    for i, name in enumerate([args.only] if args.only else CONFIGS):
        run_dir = work / f"run{i}"
        shutil.rmtree(run_dir, ignore_errors=True)
        overrides = overrides_for(name, model_dir, run_dir)
        est = estimate(name, overrides)
        peak = measure(name, overrides)
        ratios[name] = peak / est
        print(f"{name:<34} estimate {est / 1e9:7.3f} GB   measured peak RSS {peak / 1e9:7.3f} GB   "
              f"ratio {ratios[name]:.2f}", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    worst = max(ratios.values(), key=lambda r: abs(r - 1))
    print("memory_plan: ratios=" + ",".join(f"{n.split(',')[0].replace(' ', '')}:{r:.2f}" for n, r in ratios.items())
          + f" worst={worst:.2f}")


if __name__ == "__main__":
    main()
