"""The trainer's step over a group of n stacked SAEs: moments read back (what train/step.py runs) against
writing the whole update of SAE i at once (the form it replaced), in one process, interleaved.

    .venv/bin/python benchmarks/stacked_step.py                       # n = 4, 16, 64; d_in 256, d_sae 2048
    .venv/bin/python benchmarks/stacked_step.py --hooks 8 84 --d-in 512

Writing SAE i's new parameters and Adam moments together lets XLA fuse the moment update into the fusion
that writes the parameters; that fusion then reads the old moments while another overwrites them in place,
and XLA copies the whole stacked moments every iteration (train/step.py's docstring). For each n it prints
the time per SAE of both forms, the ratio, and XLA's temporaries of each compiled step. Last line:
``stacked_step: n=N together_ms=A readback_ms=B speedup=A/B temp_ratio=T`` for the largest n.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh

from qwen_sae_jax.config import load_config
from qwen_sae_jax.train.config import TrainConfig
from qwen_sae_jax.train.plan import make_plan
from qwen_sae_jax.train.step import METRIC_KEYS, GroupState, Trainer, sae_update


def trainer_for(n: int, d_in: int, d_sae: int, k: int, batch: int) -> Trainer:
    hooks = ",".join(f"blocks.{i}.hook_resid_post" for i in range(n))
    cfg = load_config(TrainConfig, os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml"),
                      [f"saes.0.d_sae={d_sae}", f"saes.0.k={k}", "saes.0.expansion_factor=null",
                       f"train.batch_size={batch}", f"buffer.size={4 * batch}", f"hooks=[{hooks}]"])
    mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    return Trainer(cfg, make_plan(cfg, n, d_in), mesh)


def together_step(trainer: Trainer):
    """The replaced form: SAE i's parameters, moments and counter written back in one go."""
    opt = trainer.optimizers[0]

    def step(state, ready, cursor):
        group = state[0]
        x = lax.dynamic_index_in_dim(ready, cursor, axis=1, keepdims=False)       # [n, B, D]

        def body(i, carry):
            stack, acc = carry
            cur = jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, i, keepdims=False), stack)
            new, m = sae_update(*cur, lax.dynamic_index_in_dim(x, i, keepdims=False), opt)
            stack = jax.tree.map(lambda a, u: lax.dynamic_update_index_in_dim(a, u.astype(a.dtype), i, 0),
                                 stack, new)
            return stack, {key: acc[key].at[i].set(v) for key, v in m.items()}

        n = x.shape[0]
        acc = {key: jnp.zeros((n,), jnp.int32 if key == "n_nonfinite" else jnp.float32) for key in METRIC_KEYS}
        (sae, opt_state, counter), metrics = lax.fori_loop(
            0, n, body, ((group.sae, group.opt_state, group.tokens_since_fired), acc))
        return (GroupState(sae=sae, opt_state=opt_state, tokens_since_fired=counter),), (metrics,)
    return step


def measure(n: int, args) -> dict:
    trainer = trainer_for(n, args.d_in, args.d_sae, args.k, args.batch)
    samples = jax.random.normal(jax.random.key(0), (n, 64, args.d_in))
    ready = jax.random.normal(jax.random.key(1), (n, 2, args.batch, args.d_in))
    forms = {"together": jax.jit(together_step(trainer), donate_argnums=0),
             "readback": jax.jit(trainer._step_fn, donate_argnums=0)}
    states = {name: trainer.init_state(jax.random.key(2), samples) for name in forms}
    temp = {name: fn.lower(states[name], ready, jnp.int32(0)).compile().memory_analysis().temp_size_in_bytes
            for name, fn in forms.items()}
    best = {name: math.inf for name in forms}
    for rep in range(args.repeats + 1):          # the first round compiles and warms up
        for name, fn in forms.items():
            start = time.perf_counter()
            states[name], _ = fn(states[name], ready, jnp.int32(rep % 2))
            jax.block_until_ready(states[name])
            if rep:
                best[name] = min(best[name], time.perf_counter() - start)
    return {"n": n, "ms": {k: v * 1e3 / n for k, v in best.items()}, "temp": temp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hooks", type=int, nargs="+", default=[4, 16, 64], help="SAEs per group (n)")
    parser.add_argument("--d-in", type=int, default=256, help="SAE input width")
    parser.add_argument("--d-sae", type=int, default=2048, help="SAE latents")
    parser.add_argument("--k", type=int, default=32, help="TopK k")
    parser.add_argument("--batch", type=int, default=256, help="tokens per step")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (the minimum is reported)")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; TopK d_in={args.d_in} d_sae={args.d_sae} "
          f"k={args.k} batch={args.batch} float32, Adam; ms per SAE, minimum of {args.repeats}")
    print(f"{'n':>4} {'together':>10} {'read-back':>10} {'speedup':>8} {'temp together':>14} {'temp read-back':>15}")
    for n in args.hooks:
        r = measure(n, args)
        ms, temp = r["ms"], r["temp"]
        print(f"{n:4d} {ms['together']:10.2f} {ms['readback']:10.2f} {ms['together'] / ms['readback']:8.2f} "
              f"{temp['together'] / 1e6:11.1f} MB {temp['readback'] / 1e6:12.1f} MB", flush=True)
    print(f"stacked_step: n={n} together_ms={ms['together']:.3f} readback_ms={ms['readback']:.3f} "
          f"speedup={ms['together'] / ms['readback']:.2f} temp_ratio={temp['together'] / temp['readback']:.2f}")


if __name__ == "__main__":
    main()
