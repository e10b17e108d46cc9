"""One full TopK SAE training step (forward, backward, Adam update) against one encoder matmul.

    .venv/bin/python benchmarks/sae_step.py            # d_in=1024, d_sae=16384, k=64, batch 4096, float32
    .venv/bin/python benchmarks/sae_step.py --batch 1024 --dead none --skip-dense   # AuxK's cost, nothing dead

Times, in one process and interleaved so that machine load hits all of them alike:
  * matmul      one encoder matmul [B, d_in] @ [d_in, d_sae] (the unit of every ratio),
  * sparse step `sae_loss` + grad (gather decode, scatter backward, no dense [B, d_sae] latents),
                decoder-gradient projection, Adam, renormalisation: what the trainer runs,
  * dense step  the naive path for comparison: dense latents z [B, d_sae] scattered from lax.top_k,
                z @ W_dec, plain autodiff (two more full-size matmuls in the backward), same Adam.
With ``--dead none|some`` the sparse step passes a dead mask (AuxK on; no latent dead, or 1/8 of them) and the
step without AuxK (dead_mask=None) is timed beside it: the ratio is what AuxK costs.
Reports the minimum of the repeats, tokens/s of the sparse step, peak RSS after the sparse phase (before
the dense path runs), and the recall of `lax.approx_max_k` (implementation="approx") on this step's
pre-activations: as it runs here (CPU falls back to an exact top-k) and emulated with the TPU algorithm
(max-reduce into the number of bins XLA picks for recall_target, then exact top-k of the bins).
With ``--profile`` it also traces a few sparse steps with `jax.profiler` and prints the XLA operations that
take the most time per step, as a share of the encoder matmul (where the step's time goes; see docs/sae.md).
The last line is machine-readable.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import resource
import tempfile
import time

import jax
import jax.numpy as jnp
import optax
from jax import lax

from qwen_sae_jax.sae import SAEConfig, after_update, before_update, init_sae, sae_loss
from qwen_sae_jax.sae.select import APPROX_RECALL_TARGET


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def interleaved_min(fns: dict, repeats: int) -> dict[str, float]:
    for fn, args in fns.values():  # compile + warm up
        jax.block_until_ready(fn(*args))
    best = {name: math.inf for name in fns}
    for _ in range(repeats):
        for name, (fn, args) in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def profile_ops(run, steps: int = 3) -> list[tuple[str, float, int]]:
    """(XLA operation, seconds per step, launches per step) of ``run()`` traced ``steps`` times with
    jax.profiler, most expensive first (loop bodies appear as their operations, summed over iterations)."""
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        for _ in range(steps):
            jax.block_until_ready(run())
        jax.profiler.stop_trace()
        (trace_file,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(trace_file) as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    seconds, launches = collections.Counter(), collections.Counter()
    wrappers = ("$", "ThunkExecutor", "PjitFunction", "while")
    for event in events:
        if event.get("ph") == "X" and not event["name"].startswith(wrappers):
            seconds[event["name"]] += event.get("dur", 0) / 1e6 / steps
            launches[event["name"]] += 1
    return [(name, sec, launches[name] // steps) for name, sec in seconds.most_common()]


def op_sources(compiled_text: str) -> dict[str, str]:
    """XLA operation name -> the JAX operation it came from (the ``op_name`` metadata of the compiled HLO)."""
    found = {}
    for match in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = [^\n]*?op_name=\"([^\"]+)\"", compiled_text, re.M):
        found.setdefault(match.group(1), match.group(2).split("/", 1)[-1])
    return found


def make_sparse_step(opt, implementation):
    def step(sae, opt_state, x, dead=None):
        (loss, terms), grads = jax.value_and_grad(
            lambda s: sae_loss(s, x, dead_mask=dead, implementation=implementation), has_aux=True)(sae)
        grads = before_update(sae, grads)
        updates, opt_state = opt.update(grads, opt_state, sae)
        return after_update(optax.apply_updates(sae, updates), terms), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def dense_topk_loss(sae, x):
    """The naive reference path: dense latents and plain autodiff."""
    x_enc = x - sae.b_dec
    pre = x_enc @ sae.W_enc + sae.b_enc  # [B, d_sae]
    vals, idx = lax.top_k(pre, sae.cfg.k)
    rows = jnp.arange(x.shape[0])[:, None]
    z = jnp.zeros_like(pre).at[rows, idx].set(jax.nn.relu(vals))  # dense [B, d_sae]
    x_hat = z @ sae.W_dec + sae.b_dec
    return jnp.mean(jnp.sum((x_hat - x) ** 2, axis=-1))


def make_dense_step(opt):
    def step(sae, opt_state, x):
        loss, grads = jax.value_and_grad(dense_topk_loss)(sae, x)
        grads = before_update(sae, grads)
        updates, opt_state = opt.update(grads, opt_state, sae)
        return after_update(optax.apply_updates(sae, updates), None), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def tpu_approx_bins(n: int, k: int, recall_target: float) -> int:
    """Bins XLA's TPU approx top-k reduces a row of n into (its ApproxTopKReductionOutputSize rule):
    m = 1 / (1 - recall^(1/(k-1))) windows are needed; the window is the largest power of two <= n / m."""
    if recall_target >= 1.0 or k <= 1:
        return n
    needed = 1.0 / (1.0 - recall_target ** (1.0 / (k - 1)))
    log2_window = max(0, int(math.floor(math.log2(n / needed))))
    return -(-n // (1 << log2_window))


def emulated_tpu_recall(pre, k, recall_target):
    """Recall of the TPU algorithm emulated on CPU: bin j holds max(pre[j::bins]); exact top-k of the bins."""
    batch, n = pre.shape
    bins = tpu_approx_bins(n, k, recall_target)
    window = -(-n // bins)
    padded = jnp.pad(pre, ((0, 0), (0, bins * window - n)), constant_values=-jnp.inf)
    strided = padded.reshape(batch, window, bins)  # entry (w, j) is column w * bins + j
    best_w = jnp.argmax(strided, axis=1)  # [B, bins]
    _, best_bins = lax.top_k(jnp.max(strided, axis=1), k)
    approx = jnp.take_along_axis(best_w, best_bins, axis=1) * bins + best_bins
    _, exact = lax.top_k(pre, k)
    return float(jnp.mean(jnp.any(approx[:, :, None] == exact[:, None, :], axis=-1))), bins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-in", type=int, default=1024, help="SAE input width")
    parser.add_argument("--d-sae", type=int, default=16384, help="SAE latents")
    parser.add_argument("--k", type=int, default=64, help="TopK k")
    parser.add_argument("--batch", type=int, default=4096, help="tokens per step")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (the minimum is reported)")
    parser.add_argument("--implementation", default="auto", help="auto | pallas | xla | approx")
    parser.add_argument("--skip-dense", action="store_true", help="do not time the dense path")
    parser.add_argument("--dead", choices=("off", "none", "some"), default="off",
                        help="AuxK in the sparse step: off (dead_mask=None, no AuxK), none (a dead mask with no "
                             "dead latent), some (1/8 of the latents dead); none/some also time the off step in "
                             "the same process and print the ratio")
    parser.add_argument("--profile", action="store_true",
                        help="also print the XLA operations that take the most time in the sparse step")
    args = parser.parse_args()

    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} cpus, load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())})")
    print(f"TopK SAE d_in={args.d_in} d_sae={args.d_sae} k={args.k} batch={args.batch} float32, "
          f"implementation={args.implementation}")
    cfg = SAEConfig(architecture="topk", d_in=args.d_in, d_sae=args.d_sae, k=args.k)
    key_x, key_init = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (args.batch, args.d_in), jnp.float32)
    sae = init_sae(cfg, key_init, x[:1024])
    opt = optax.adam(1e-4)
    matmul = jax.jit(lambda a, w: a @ w)

    def fresh():
        fresh_sae = jax.tree.map(jnp.copy, sae)
        return fresh_sae, opt.init(fresh_sae)

    sparse_step = make_sparse_step(opt, args.implementation)
    dead = None
    if args.dead != "off":
        dead = jnp.zeros((args.d_sae,), bool) if args.dead == "none" else jnp.arange(args.d_sae) % 8 == 0
    s_sae, s_state = fresh()
    o_sae, o_state = fresh()

    def run_sparse():
        nonlocal s_sae, s_state
        s_sae, s_state, loss = sparse_step(s_sae, s_state, x, dead)
        return loss

    def run_off():  # the same step without AuxK (dead_mask=None), timed beside it when --dead is none/some
        nonlocal o_sae, o_state
        o_sae, o_state, loss = sparse_step(o_sae, o_state, x)
        return loss

    timed = {"matmul": (matmul, (x, sae.W_enc)), "sparse": (run_sparse, ())}
    if dead is not None:
        timed["off"] = (run_off, ())
    best = interleaved_min(timed, args.repeats)
    step_ratio = best["sparse"] / best["matmul"]
    sparse_peak = peak_rss_mb()
    tokens_per_s = args.batch / best["sparse"]
    print(f"encoder matmul       {best['matmul'] * 1e3:9.1f} ms")
    print(f"sparse step          {best['sparse'] * 1e3:9.1f} ms  = {step_ratio:.2f} x matmul  "
          f"({tokens_per_s:,.0f} tokens/s, peak RSS {sparse_peak:,.0f} MB)")
    auxk_ratio = float("nan")
    if dead is not None:
        auxk_ratio = best["sparse"] / best["off"]
        print(f"  without AuxK        {best['off'] * 1e3:9.1f} ms: the step with AuxK (dead={args.dead}, "
              f"{int(jnp.sum(dead))} dead) = {auxk_ratio:.3f} x the step without "
              f"(+{(best['sparse'] - best['off']) * 1e3:.1f} ms)")

    if args.profile:
        print(f"where the sparse step's time goes (jax.profiler, per step; unit = the {best['matmul'] * 1e3:.0f} ms "
              "matmul):")
        sources = op_sources(sparse_step.lower(s_sae, s_state, x, dead).compile().as_text())
        for name, sec, launches in profile_ops(run_sparse)[:14]:
            print(f"  {sec * 1e3:8.1f} ms  {sec / best['matmul']:5.2f}  x{launches:<4d} {name:28s} "
                  f"{sources.get(name, '')[-70:]}")

    dense_ratio = float("nan")
    if not args.skip_dense:
        dense_step = make_dense_step(opt)
        d_sae_, d_state = fresh()

        def run_dense():
            nonlocal d_sae_, d_state
            d_sae_, d_state, loss = dense_step(d_sae_, d_state, x)
            return loss

        best_d = interleaved_min({"matmul": (matmul, (x, sae.W_enc)), "dense": (run_dense, ())}, args.repeats)
        dense_ratio = best_d["dense"] / best_d["matmul"]
        print(f"dense step           {best_d['dense'] * 1e3:9.1f} ms  = {dense_ratio:.2f} x matmul  "
              f"(peak RSS of the process now {peak_rss_mb():,.0f} MB)")

    pre = matmul(x - sae.b_dec, sae.W_enc) + sae.b_enc
    _, approx_idx = lax.approx_max_k(pre, args.k, recall_target=APPROX_RECALL_TARGET)
    _, exact_idx = lax.top_k(pre, args.k)
    recall_here = float(jnp.mean(jnp.any(approx_idx[:, :, None] == exact_idx[:, None, :], axis=-1)))
    recall_tpu, bins = emulated_tpu_recall(pre, args.k, APPROX_RECALL_TARGET)
    print(f"approx_max_k recall (target {APPROX_RECALL_TARGET}): {recall_here:.4f} as run on "
          f"{jax.devices()[0].platform}; {recall_tpu:.4f} with the TPU algorithm emulated ({bins} bins)")
    print(f"sae_step: tokens_per_s={tokens_per_s:.0f} step_over_matmul={step_ratio:.3f} "
          f"dense_step_over_matmul={dense_ratio:.3f} peak_rss_mb={sparse_peak:.0f} auxk_over_off={auxk_ratio:.3f}")


if __name__ == "__main__":
    main()
