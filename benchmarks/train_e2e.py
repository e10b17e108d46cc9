"""Throughput of the whole training pipeline (tokens -> forward -> filter -> buffer -> SAE steps), split into
time in the model forward (buffer fills) and time in the SAE steps. CPU, float32, one device.

1. The embedded tiny Qwen3, every layer x {residual, MLP out, attention out} (12 TopK SAEs, d_sae 1536,
   k 32), from real text (tokenisation included). Also: the forward with all 12 hooks captured against the
   forward with only the deepest one (the model forward is paid once, however many SAEs).
2. A Qwen3-0.6B-shaped random model with 4 layers (hidden 1024, 16 heads, 8 kv heads, head_dim 128,
   intermediate 3072), the residual of layer 2 (layers.2), one TopK SAE with d_sae = 16 x 1024, k 32, from
   random token ids. The SAE step inside the pipeline is compared with the same step run stand-alone
   (value_and_grad + optimizer on a fixed batch) in this process.

    .venv/bin/python benchmarks/train_e2e.py [--steps 40] [--big-steps 8]

Last line (machine-readable): ``train_e2e: tokens_per_s=N forward_share=R`` (the tiny all-sites pipeline).
"""
from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np


def make_config(model_name: str, hooks, d_sae: int, k: int, batch: int, size: int, ctx: int, rows: int, files=()):
    from qwen_sae_jax.config import load_config
    from qwen_sae_jax.train.config import TrainConfig
    return load_config(TrainConfig, {
        "model": {"name": model_name}, "hooks": list(hooks),
        "saes": [{"name": "topk", "architecture": "topk", "d_sae": d_sae, "k": k, "optim": {"warmup_steps": 10}}],
        "data": {"files": list(files) or ["unused"], "ctx_len": ctx, "batch_size": rows},
        "buffer": {"size": size, "init_sample": 1024}, "train": {"total_tokens": 10**9, "batch_size": batch},
        "mesh": {"data": 1}})


class RandomTokens:
    """Random token ids [rows, ctx] (the 0.6B-shaped model has no tokenizer)."""

    def __init__(self, vocab: int, rows: int, ctx: int):
        self.rng, self.shape, self.vocab = np.random.default_rng(0), (rows, ctx), vocab

    def __next__(self):
        return self.rng.integers(0, self.vocab, self.shape, dtype=np.int32)


def run_pipeline(lm, cfg, tokens, special_ids, steps: int) -> dict:
    """The training loop's work for ``steps`` steps (after one warm-up cycle): seconds in fills (forward +
    filter + buffer, with the shuffles) and in SAE steps."""
    from qwen_sae_jax.data import buffer as mixing
    from qwen_sae_jax.data.stream import ActivationStream
    from qwen_sae_jax.train.mesh import make_mesh
    from qwen_sae_jax.train.plan import make_plan
    from qwen_sae_jax.train.step import Trainer

    mesh = make_mesh(cfg.mesh)
    plan = make_plan(cfg, lm.config.mixers, lm.config.hidden_size)
    stream = ActivationStream(plan.hooks, mesh, lm=lm, tokens=tokens, special_ids=special_ids, drop_first=True,
                              outlier_factor=cfg.filter.norm_outlier_factor, global_batch=cfg.data.batch_size,
                              ctx_len=cfg.data.ctx_len)
    trainer = Trainer(cfg, plan, mesh)
    Bt, size = cfg.train.batch_size, cfg.buffer.size
    S = size // 2 // Bt
    buf = jax.jit(lambda: mixing.init_buffer(len(plan.hooks), plan.d_in, size, stream.rows_per_fill, Bt,
                                             jnp.float32), out_shardings=mixing.buffer_shardings(mesh))()
    fstate = stream.init_filter_state()
    shuffle = jax.jit(mixing.shuffle, static_argnums=(2,), donate_argnums=(0,))
    buf, fstate = stream.fill_until(lm.params, buf, fstate, size)
    state = trainer.init_state(jax.random.key(0), buf.pool[:, :1024].astype(jnp.float32))
    fill_s, step_times = 0.0, []
    cursor, refills = S, 0
    for i in range(S + steps):          # the first S steps (one buffer cycle) compile and warm up
        timed = i >= S
        if cursor == S:
            t0 = time.perf_counter()
            buf, fstate = stream.fill_until(lm.params, buf, fstate, size)
            buf = jax.block_until_ready(shuffle(buf, jax.random.key(refills), size))
            fill_s += (time.perf_counter() - t0) * timed
            cursor, refills = 0, refills + 1
        t0 = time.perf_counter()
        state, metrics = jax.block_until_ready(trainer.step(state, buf.ready, cursor))
        if timed:
            step_times.append(time.perf_counter() - t0)
        cursor += 1
    total = fill_s + sum(step_times)
    # step_s: the median step (as for the stand-alone step), robust to the machine's noise
    return {"tokens_per_s": steps * Bt / total, "forward_share": fill_s / total,
            "step_s": statistics.median(step_times),
            "fill_s": fill_s, "stream": stream, "fstate": fstate, "buf": buf,
            "fvu": float(np.mean(np.asarray(metrics[0]["fvu"])))}


def time_fill(stream, params, buf, fstate, repeats: int = 5) -> float:
    """Median seconds of one fill (one model forward + filter + buffer append) after a warm-up."""
    times = []
    for i in range(repeats + 1):
        buf = buf.replace(count=jnp.zeros((), jnp.int32))
        t0 = time.perf_counter()
        buf, fstate = stream.fill_once(params, buf, fstate)
        jax.block_until_ready(buf.pool)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def standalone_step_s(cfg, d_in: int, steps: int = 5) -> float:
    """Median seconds of one SAE step (loss, gradient, decoder projection, optimizer, renormalisation) jitted
    on its own with donated state, the batch and the dead-latent mask passed as arguments (as in the
    trainer: a constant all-False mask would let XLA delete the AuxK branch at compile time)."""
    import optax

    from qwen_sae_jax.sae import after_update, before_update, init_sae, sae_loss
    from qwen_sae_jax.train.optim import make_optimizer

    v = cfg.saes[0]
    sae = init_sae(v.sae_config(d_in=d_in, hook_name="", model_name=""), jax.random.key(0))
    opt = make_optimizer(v.optim, 1000)
    opt_state = opt.init(sae)
    x = jax.random.normal(jax.random.key(1), (cfg.train.batch_size, d_in))
    dead = jnp.zeros((sae.cfg.d_sae,), bool)

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(sae, opt_state, x, dead):
        (loss, terms), grads = jax.value_and_grad(lambda s: sae_loss(s, x, dead_mask=dead), has_aux=True)(sae)
        updates, opt_state = opt.update(before_update(sae, grads), opt_state, sae)
        return after_update(optax.apply_updates(sae, updates), terms), opt_state

    sae, opt_state = jax.block_until_ready(step(sae, opt_state, x, dead))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        sae, opt_state = jax.block_until_ready(step(sae, opt_state, x, dead))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps of the tiny all-sites pipeline")
    parser.add_argument("--big-steps", type=int, default=8, help="timed steps of the 0.6B-shaped pipeline")
    args = parser.parse_args()
    jax.config.update("jax_default_matmul_precision", "highest")

    from qwen_sae_jax.data.tokens import TokenBatches, special_token_ids
    from qwen_sae_jax.lm import LanguageModel, load_model
    from qwen_sae_jax.models.qwen3 import Qwen3Config
    from qwen_sae_jax.models.qwen3.params import init_params

    # ---- 1. tiny model, every layer x 3 sites
    lm = load_model("tiny")
    files = [f"tiny:heldout/{s}.jsonl" for s in ("english", "chinese", "code", "docs", "chat")]
    hooks = ["blocks.*.hook_resid_post", "layers.*.mlp", "layers.*.self_attn"]
    cfg = make_config("tiny", hooks, 1536, 32, 1024, 16384, 128, 16, files)
    special = special_token_ids(lm.tokenizer)
    tiny = run_pipeline(lm, cfg, TokenBatches(lm.tokenizer, cfg.data), special, args.steps)
    fill_all = time_fill(tiny["stream"], lm.params, tiny["buf"], tiny["fstate"])
    cfg1 = make_config("tiny", ["layers.3"], 1536, 32, 1024, 16384, 128, 16, files)
    one = run_pipeline(lm, cfg1, TokenBatches(lm.tokenizer, cfg1.data), special, 2)
    fill_one = time_fill(one["stream"], lm.params, one["buf"], one["fstate"])
    print(f"tiny Qwen3, 12 SAEs (4 layers x 3 sites, d_sae 1536, k 32), batch 1024: "
          f"{tiny['tokens_per_s']:,.0f} activations/s per SAE ({12 * tiny['tokens_per_s']:,.0f} SAE-activations/s), "
          f"forward share {tiny['forward_share']:.2f}, step {1000 * tiny['step_s']:.0f} ms")
    print(f"  one fill (16 x 128 tokens): {1000 * fill_all:.1f} ms capturing 12 hooks vs {1000 * fill_one:.1f} ms "
          f"capturing only layers.3: ratio {fill_all / fill_one:.2f} (the forward is paid once)")

    # ---- 2. Qwen3-0.6B-shaped, 4 layers, residual of layer 2, one SAE
    config = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=4,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=128, rope_theta=1e6,
                         tie_word_embeddings=True)
    big = LanguageModel(config, init_params(config, seed=0), tokenizer=None, name="random-0.6B-shaped-4L")
    cfg2 = make_config("random", ["layers.2"], 16 * 1024, 32, 1024, 8192, 256, 8)
    res = run_pipeline(big, cfg2, RandomTokens(config.vocab_size, 8, 256), [], args.big_steps)
    alone = standalone_step_s(cfg2, 1024)
    print(f"Qwen3-0.6B-shaped 4 layers, layers.2 residual, one SAE d_sae 16384 k 32, batch 1024: "
          f"{res['tokens_per_s']:,.0f} activations/s, forward share {res['forward_share']:.2f}")
    print(f"  SAE step in the pipeline {1000 * res['step_s']:.0f} ms vs stand-alone {1000 * alone:.0f} ms: "
          f"ratio {res['step_s'] / alone:.2f}")
    print(f"train_e2e: tokens_per_s={tiny['tokens_per_s']:.0f} forward_share={tiny['forward_share']:.3f}")


if __name__ == "__main__":
    main()
