"""Forward and capture throughput of the Flax Qwen3 against transformers (PyTorch), same weights, same process.

Model: Qwen3-0.6B widths (hidden 1024, 16 heads, 8 kv heads, head_dim 128, intermediate 3072, vocab
151936, tied embeddings) with 4 layers; batch 4 x 512 tokens; float32 on CPU. Measures tokens/s of
``lm.logits`` (jitted) and of ``torch`` ``model(ids).logits`` under ``inference_mode``, and the cost of
``lm.capture(["layers.1"])`` (layer 2 of 4: the layers above and the LM head are not computed) relative to
the full forward. Median of ``--repeats`` timed runs after one warm-up (compilation excluded).

    .venv/bin/python benchmarks/forward.py [--layers 4 --batch 4 --seq 512 --repeats 5]

Last line (machine-readable): ``forward: speed_vs_torch=R capture_over_forward=R``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (compiles the JAX program)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vocab", type=int, default=151936)
    args = parser.parse_args()

    import jax
    import numpy as np
    import torch
    import transformers

    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.models.qwen3 import Qwen3Config
    from qwen_sae_jax.models.qwen3.params import init_params, save_hf

    config = Qwen3Config(vocab_size=args.vocab, hidden_size=1024, intermediate_size=3072,
                         num_hidden_layers=args.layers, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                         rope_theta=1e6, tie_word_embeddings=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model")
        save_hf(init_params(config, seed=0), config, path)
        lm = load_model(path)
        hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    tokens = args.batch * args.seq
    ids = np.random.RandomState(0).randint(0, args.vocab, (args.batch, args.seq)).astype(np.int32)
    ids_t = torch.tensor(ids, dtype=torch.long)
    half = f"layers.{args.layers // 2 - 1}"

    def jax_forward():
        jax.block_until_ready(lm.logits(ids))

    def jax_capture():
        jax.block_until_ready(lm.capture(ids, [half]))

    def jax_all_layers():  # the residual after the last layer, no LM head
        jax.block_until_ready(lm.capture(ids, [f"layers.{args.layers - 1}"]))

    def torch_forward():
        with torch.inference_mode():
            hf(input_ids=ids_t).logits

    # the two implementations agree on these weights (float32)
    with torch.inference_mode():
        diff = float(np.abs(np.asarray(lm.logits(ids[:1, :64])) - hf(input_ids=ids_t[:1, :64]).logits.numpy()).max())

    t_torch = timed(torch_forward, args.repeats)
    t_fwd = timed(jax_forward, args.repeats)
    t_cap = timed(jax_capture, args.repeats)
    t_body = timed(jax_all_layers, args.repeats)

    print(f"device: {jax.devices()[0].platform} x{len(jax.devices())}, torch threads {torch.get_num_threads()}; "
          f"{args.layers} layers, batch {args.batch} x {args.seq}, vocab {args.vocab}; max |logits diff| {diff:.2e}")
    print(f"torch forward          {t_torch * 1e3:9.1f} ms  {tokens / t_torch:10.0f} tok/s")
    print(f"jax   forward (logits) {t_fwd * 1e3:9.1f} ms  {tokens / t_fwd:10.0f} tok/s")
    print(f"jax   capture {half:<9}{t_cap * 1e3:9.1f} ms  {tokens / t_cap:10.0f} tok/s")
    print(f"jax   capture layers.{args.layers - 1} {t_body * 1e3:7.1f} ms  (all layers, no LM head); "
          f"capture {half} / all layers = {t_cap / t_body:.2f}")
    print(f"forward: speed_vs_torch={t_torch / t_fwd:.2f} capture_over_forward={t_cap / t_fwd:.2f}")


if __name__ == "__main__":
    main()
