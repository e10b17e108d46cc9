"""The SFT step of the tiny model under other formulations of its pieces, against the committed one, in one process.

    .venv/bin/python benchmarks/sft_step_variants.py [--variants before attention-heads ...] [--rounds 9]
        [--model tiny] [--batch 16] [--length 128]

Each variant swaps one piece of the model or the loss at trace time (module attributes read when the step is
traced), or passes XLA compiler options, and is compiled ahead of time once (so no later retrace sees another
variant's swap); every step, and a transformers + torch AdamW step on the same model and batch, is then timed in
interleaved rounds (a busy host slows all alike) and the median reported. The variants, with what they swap
(docs/posttrain.md, "Step speed", has the figures and what they showed):

* ``before``: the formulation before 2026-12-07: projections and the tied LM head on ``[B, T, D]`` (no
  `as_matrix`) and the CE from ``log_softmax`` + ``take_along_axis`` of the sliced logits;
* ``no-matrix`` / ``log-softmax-ce``: one half of ``before`` each;
* ``attention-heads``: k / v repeated to every query head, attention on ``[B, H, T, hd]`` (HF ``repeat_kv``);
* ``attention-rows``: the G query heads of a kv head stacked as rows, ``[B, K, G * T, hd]``, no repeat;
* ``softmax-by-hand``: the attention softmax as ``exp(s - stop_gradient(max)) / sum`` (q scaled before the dot);
* ``rmsnorm-vjp`` / ``silu-vjp``: RMSNorm / SiLU with a written-out one-pass gradient (`jax.custom_vjp`);
* ``fast-math``: XLA:CPU ``xla_cpu_enable_fast_math``; ``ynn-dots-only``: only dots go to YNNPACK.

Each variant's first three losses are printed beside the committed ones (they agree to float rounding). Last
line: ``sft_step_variants: committed_ms=X torch_speedup=Y NAME=Z ...`` with Z = the variant's time / the committed
step's (above 1: the committed step is faster).
"""
from __future__ import annotations

import argparse
import functools

import numpy as np
from _tiny_runs import interleaved_medians, torch_sft_step

VARIANTS = ("before", "no-matrix", "log-softmax-ce", "attention-heads", "attention-rows", "softmax-by-hand",
            "rmsnorm-vjp", "silu-vjp", "fast-math", "ynn-dots-only")
COMPILER_OPTIONS = {"fast-math": {"xla_cpu_enable_fast_math": True},
                    "ynn-dots-only": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}}


def _formulations():
    """{variant: [(module, attribute, replacement)]} (imports jax lazily, for --help)."""
    import jax
    import jax.numpy as jnp

    from qwen_sae_jax.models.qwen3 import modeling
    from qwen_sae_jax.posttrain import step

    def log_softmax_ce(logits, ids, reply):
        logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)       # [B, T-1, V]
        nll = -jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]          # [B, T-1]
        target = reply[:, 1:].astype(bool)
        n = jnp.sum(target)
        return jnp.sum(jnp.where(target, nll, 0.0)) / jnp.maximum(n, 1), n

    def attention_heads(q, k, v, mask_bias, dtype):
        B, T, H, hd = q.shape
        G = H // k.shape[2]
        kh, vh = (jnp.repeat(x, G, axis=2).transpose(0, 2, 1, 3) for x in (k, v))  # [B, H, S, hd]
        scores = jnp.einsum("bthd,bhsd->bhts", q, kh).astype(jnp.float32) * (hd ** -0.5) + mask_bias[:, None]
        probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
        return jnp.einsum("bhts,bhsd->bthd", probs, vh).reshape(B, T, H * hd)

    def attention_rows(q, k, v, mask_bias, dtype):
        B, T, H, hd = q.shape
        K = k.shape[2]
        G = H // K
        rows = q.reshape(B, T, K, G, hd).transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, hd)
        kk, vk = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)                   # [B, K, S, hd]
        scores = jnp.einsum("bkmd,bksd->bkms", rows, kk).astype(jnp.float32) * (hd ** -0.5)
        scores = scores.reshape(B, K, G, T, -1) + mask_bias[:, None, None]
        probs = jax.nn.softmax(scores, axis=-1).astype(dtype).reshape(B, K, G * T, -1)
        out = jnp.einsum("bkms,bksd->bkmd", probs, vk).reshape(B, K, G, T, hd)
        return out.transpose(0, 3, 1, 2, 4).reshape(B, T, H * hd)

    def softmax_by_hand(q, k, v, mask_bias, dtype):
        B, T, H, hd = q.shape
        K = k.shape[2]
        q = q.reshape(B, T, K, H // K, hd) * (hd ** -0.5)
        scores = jnp.einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32) + mask_bias[:, None, None]
        e = jnp.exp(scores - jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True)))
        probs = (e / jnp.sum(e, axis=-1, keepdims=True)).astype(dtype)
        return jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(B, T, H * hd)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
    def rms_normalize(x, eps):
        return _rms_forward(x, eps)[0]

    def _rms_forward(x, eps):
        x32 = x.astype(jnp.float32)
        r = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
        return x32 * r, (x, r)

    def _rms_backward(eps, res, g):
        x, r = res
        x32 = x.astype(jnp.float32)
        return ((r * (g - x32 * (r * r) * jnp.mean(g * x32, axis=-1, keepdims=True))).astype(x.dtype),)

    rms_normalize.defvjp(_rms_forward, _rms_backward)

    @jax.custom_vjp
    def silu(x):
        return x * jax.nn.sigmoid(x)

    def _silu_backward(x, g):
        s = jax.nn.sigmoid(x)
        return (g * s * (1 + x * (1 - s)),)

    silu.defvjp(lambda x: (silu(x), x), _silu_backward)
    as_vectors = (modeling, "as_matrix", lambda fn, x: fn(x))
    old_ce = (step, "reply_ce", log_softmax_ce)
    return {"before": [as_vectors, old_ce], "no-matrix": [as_vectors], "log-softmax-ce": [old_ce],
            "attention-heads": [(modeling, "grouped_attention", attention_heads)],
            "attention-rows": [(modeling, "grouped_attention", attention_rows)],
            "softmax-by-hand": [(modeling, "grouped_attention", softmax_by_hand)],
            "rmsnorm-vjp": [(modeling, "rms_normalize", rms_normalize)],
            "silu-vjp": [(jax.nn, "silu", silu)]}


def compiled_steps(model: str, names: list[str], B: int, T: int):
    """({name: one_step()}, {name: first three losses}, ids) for the committed step and each variant."""
    import jax

    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.posttrain import step as sft
    from qwen_sae_jax.posttrain.config import SFTOptimConfig
    from qwen_sae_jax.train.config import MeshConfig
    from qwen_sae_jax.train.mesh import make_mesh

    ids = np.random.default_rng(0).integers(0, 4000, size=(B, T)).astype(np.int32)
    batch = sft.Batch(ids, np.ones((B, T), np.int32), np.ones((B, T), bool), np.zeros(B, np.int32))
    mesh = make_mesh(MeshConfig(data=1, model=1))
    lm = load_model(model, mesh=mesh)
    opt = sft.make_optimizer(SFTOptimConfig(lr=1e-5, warmup_steps=0), 1000)
    param_sh, opt_sh = sft.state_shardings(lm.params, opt, mesh)
    swaps = _formulations()
    steps, losses = {}, {}
    for name in ["committed", *names]:
        saved = [(mod, attr, getattr(mod, attr)) for mod, attr, _ in swaps.get(name, [])]
        for mod, attr, new in swaps.get(name, []):
            setattr(mod, attr, new)
        try:
            step = sft.make_step(sft.make_loss(lm, (), 1.0), opt, param_sh, opt_sh, mesh)
            state = {"p": jax.tree.map(lambda x: x.copy(), lm.params)}
            state["o"] = jax.jit(opt.init)(state["p"])
            compiled = step.lower(state["p"], state["o"], batch, ()).compile(
                compiler_options=COMPILER_OPTIONS.get(name))
        finally:
            for mod, attr, old in saved:
                setattr(mod, attr, old)

        def one(compiled=compiled, state=state):
            state["p"], state["o"], metrics = compiled(state["p"], state["o"], batch, ())
            return float(metrics["loss"])
        losses[name] = [one() for _ in range(3)]
        steps[name] = one
    return steps, losses, ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                   help="variants to time against the committed step (default: all)")
    p.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (the median is reported)")
    p.add_argument("--model", default="tiny", help="'tiny' or an HF folder of a Qwen3 model")
    p.add_argument("--batch", type=int, default=16, help="rows per step (configs/sft-tiny.yaml: 16)")
    p.add_argument("--length", type=int, default=128, help="tokens per row (configs/sft-tiny.yaml: 128)")
    args = p.parse_args()
    steps, losses, ids = compiled_steps(args.model, args.variants, args.batch, args.length)
    for name, values in losses.items():
        print(f"{name:16s} first losses {' '.join(f'{v:.6f}' for v in values)}")
    from qwen_sae_jax.lm import TINY_DIR
    fns = {**steps, "torch": torch_sft_step(TINY_DIR if args.model == "tiny" else args.model, ids)}
    med = interleaved_medians(fns, args.rounds)
    base = med["committed"]
    print(f"batch {args.batch} x {args.length}, float32, medians of {args.rounds} interleaved rounds")
    for name, t in med.items():
        print(f"{name:16s} {t * 1e3:7.1f} ms/step   {t / base:5.2f}x the committed step")
    ratios = " ".join(f"{n}={med[n] / base:.3f}" for n in args.variants)
    print(f"sft_step_variants: committed_ms={base * 1e3:.1f} torch_speedup={med['torch'] / base:.2f} {ratios}")


if __name__ == "__main__":
    main()
