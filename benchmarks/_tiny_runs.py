"""Pieces the tiny-model post-training benchmarks share (sasft.py, sft_step_variants.py, rl_repetition.py,
synthesis_coverage.py);
imported by those scripts, not a benchmark itself (`make bench` skips files starting with an underscore)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from qwen_sae_jax.config import load_config


def train_saes(out: Path, hooks: list[str]) -> dict[str, str]:
    """{hook: SAE folder}: one TopK SAE per hook on the tiny model, trained together (reused when the folders
    exist)."""
    from qwen_sae_jax.train.config import TrainConfig
    from qwen_sae_jax.train.loop import train

    folders = {h: out / "sae" / "saes" / f"{h}__topk-k32" for h in hooks}
    if not all(f.exists() for f in folders.values()):
        cfg = load_config(TrainConfig, "configs/tiny.yaml", [
            f"run_dir={out / 'sae'}", f"hooks=[{', '.join(hooks)}]", "train.total_tokens=300000",
            "eval.tokens=2048", "saes.0.optim.decay_steps=100", "log.every=100", "log.progress=lines"])
        train(cfg)
    return {h: str(f) for h, f in folders.items()}


def held_out_ce(lm, docs: list[str], ctx: int = 64) -> float:
    """Mean next-token CE (nats/token) over the first ``ctx`` tokens of each document."""
    import jax

    encoded = (lm.tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"][:ctx] for t in docs)
    seqs = [s for s in encoded if len(s) > 1]
    ids, mask = np.zeros((len(seqs), ctx), np.int32), np.zeros((len(seqs), ctx), np.int32)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    logp = np.asarray(jax.nn.log_softmax(lm.logits(ids, attention_mask=mask).astype("float32"), -1))
    nll = -np.take_along_axis(logp[:, :-1], ids[:, 1:, None], -1)[..., 0]
    target = mask[:, 1:] * mask[:, :-1]
    return float((nll * target).sum() / target.sum())


def torch_sft_step(model_dir: str, ids: np.ndarray) -> Callable[[], None]:
    """One plain transformers + torch AdamW step (lr 1e-5, clipping 1.0, loss on every token) on ``ids [B, T]``
    per call, float32, in eager mode: the baseline of the SFT step timings."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    x = torch.tensor(ids, dtype=torch.long)

    def step() -> None:
        out = model(input_ids=x, labels=x)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    return step


def interleaved_medians(fns: dict[str, Callable[[], object]], rounds: int = 7) -> dict[str, float]:
    """Median seconds per call of each function after one warm-up call each, timed in alternating rounds (a busy
    machine slows all alike)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: float(np.median(v)) for name, v in times.items()}
