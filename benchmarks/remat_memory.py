"""Memory of the SFT / SASFT gradient with and without per-layer rematerialisation (`train.remat`), at a tiny but
activation-dominated shape: what XLA allocates for the compiled gradient (temporary buffers) and what JAX keeps
from the forward for the backward (the vjp's residuals).

    .venv/bin/python benchmarks/remat_memory.py            # about 55 s on 2 shared CPU cores
    .venv/bin/python benchmarks/remat_memory.py --keep-cse  # XLA:CPU's default pipeline (see below)
    .venv/bin/python benchmarks/remat_memory.py --layers 2  # another depth (even)

Random float32 models of both families (no checkpoint, no torch): Qwen3 and a hybrid Qwen3.5 (Gated DeltaNet and
full-attention layers alternating), 8 layers, d_model 64, MLP 256, vocab 272; one batch of 8 x 256 tokens, every
token a reply token. Per model and loss it compiles ``jax.grad`` of `posttrain.step.make_loss` for the remat
modes none, layers and (Qwen3) full, and prints ``temp`` (``compile().memory_analysis().temp_size_in_bytes``)
and ``residuals`` (bytes of the leaves of ``jax.vjp``'s backward function, abstractly: what the forward hands
the backward, parameters included). The SASFT loss (Qwen3) reads ``layers.1.mlp`` (captured inside layer 1)
through one random 16-feature probe.

XLA:CPU runs the pass ``cse_barrier_expander``, which removes the optimisation barriers ``jax.checkpoint`` puts
around a recomputation; common-subexpression elimination then merges the recomputation back into the forward
and the CPU program keeps most intermediates again (GPU and TPU are expected to keep the barriers; not
measured here). So, on CPU, this script disables that pass (``XLA_FLAGS=--xla_disable_hlo_passes=
cse_barrier_expander``, set before JAX starts) unless ``--keep-cse``; the residuals do not depend on it.
Last line: ``remat_memory: <model>/<loss>: temp none=A layers=B ratio=B/A ...`` (MiB; ratio = layers / none).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LAYERS, D, MLP, VOCAB, BATCH, SEQ = 8, 64, 256, 272, 8, 256
MODES = ("none", "layers", "full")
MiB = 2 ** 20


def configs(layers: int) -> dict:
    from qwen_sae_jax.models.qwen3.config import Qwen3Config
    from qwen_sae_jax.models.qwen3_5.config import Qwen3_5Config

    common = dict(vocab_size=VOCAB, hidden_size=D, intermediate_size=MLP, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    qwen3 = Qwen3Config.from_hf({"model_type": "qwen3", "head_dim": 16, **common})
    qwen3_5 = Qwen3_5Config.from_hf({
        "model_type": "qwen3_5_text", "head_dim": 16, "partial_rotary_factor": 0.25,
        "layer_types": ["linear_attention", "full_attention"] * (layers // 2), "linear_num_key_heads": 2,
        "linear_num_value_heads": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
        "linear_conv_kernel_dim": 4, **common})
    return {"qwen3": qwen3, "qwen3_5": qwen3_5}


def probe(hook: str):
    import jax
    import jax.numpy as jnp

    from qwen_sae_jax.posttrain.sasft import LanguageProbe
    k1, k2 = jax.random.split(jax.random.key(0))
    F = 16
    return LanguageProbe(W=jax.random.normal(k1, (D, F)) / 8, b=jax.random.normal(k2, (F,)),
                         lang=jnp.arange(F, dtype=jnp.int32) % 2, tau=jnp.full((F, 2), -1.0), hook=hook)


def measure(lm, batch, probes: tuple, mode: str) -> tuple[float, float]:
    """(temp MiB of the compiled gradient, residual MiB of the vjp) of the SFT / SASFT loss under ``mode``."""
    import jax

    from qwen_sae_jax.posttrain.step import make_loss
    loss = make_loss(lm, probes, coefficient=1.0 if probes else 0.0, remat=mode)

    def value(params):
        return loss(params, batch, probes)[0]

    temp = jax.jit(jax.grad(value)).lower(lm.params).compile().memory_analysis().temp_size_in_bytes
    leaves = jax.eval_shape(lambda p: jax.tree.leaves(jax.vjp(value, p)[1]), lm.params)
    return temp / MiB, sum(x.size * x.dtype.itemsize for x in leaves) / MiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep-cse", action="store_true", help="keep XLA:CPU's cse_barrier_expander pass")
    ap.add_argument("--layers", type=int, default=LAYERS, help="decoder layers (even; default %(default)s)")
    args = ap.parse_args()
    if not args.keep_cse:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_disable_hlo_passes=cse_barrier_expander").strip()
    import jax
    import jax.numpy as jnp

    from qwen_sae_jax.lm import LanguageModel
    from qwen_sae_jax.models.registry import init_params
    from qwen_sae_jax.posttrain.step import Batch

    jax.config.update("jax_default_matmul_precision", "highest")
    print(f"backend {jax.default_backend()}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; {args.layers} layers, "
          f"d_model {D}, MLP {MLP}, vocab {VOCAB}, batch {BATCH} x {SEQ}, float32")
    ids = jax.random.randint(jax.random.key(1), (BATCH, SEQ), 0, VOCAB, jnp.int32)
    batch = Batch(ids, jnp.ones_like(ids), jnp.ones(ids.shape, bool), jnp.arange(BATCH, dtype=jnp.int32) % 2)
    summary = []
    for name, config in configs(args.layers).items():
        lm = LanguageModel(config, init_params(config, seed=0))
        qwen3 = name == "qwen3"   # the SASFT loss and remat=full on Qwen3 only (the script stays under a minute)
        for loss_name, probes in (("sft", ()), ("sasft", (probe("layers.1.mlp"),)))[:2 if qwen3 else 1]:
            temps = {}
            for mode in MODES if qwen3 else MODES[:2]:
                start = time.perf_counter()
                temps[mode], residuals = measure(lm, batch, probes, mode)
                print(f"{name:8s} {loss_name:6s} remat={mode:7s} temp {temps[mode]:8.1f} MiB   residuals "
                      f"{residuals:7.2f} MiB   ({time.perf_counter() - start:.1f} s)", flush=True)
            summary.append(f"{name}/{loss_name}: temp none={temps['none']:.1f} layers={temps['layers']:.1f} "
                           f"ratio={temps['layers'] / temps['none']:.3f}")
    print("remat_memory: " + " ".join(summary))


if __name__ == "__main__":
    main()
