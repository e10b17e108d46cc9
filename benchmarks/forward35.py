"""Forward and capture throughput of the Flax Qwen3.5 against transformers' torch fallback, same weights, same process.

Model: Qwen3.5-2B widths (hidden 2048, vocab 248320 tied; full attention 8 heads / 2 kv heads, head_dim 256,
partial rotary 0.25; Gated DeltaNet 16 key heads / 16 value heads of 128, conv 4; MLP 6144) with 4 layers,
3 Gated DeltaNet + 1 full attention (the released pattern); batch 2 x 1024 tokens; float32 on CPU. Measures
``lm.logits`` (jitted) and ``torch`` ``model(ids).logits`` under ``inference_mode`` (eager attention, the torch
chunked delta rule and conv: transformers' fallbacks, no fla / causal-conv1d), and ``lm.capture(["layers.1"])``
(layer 2 of 4: the layers above and the LM head are not computed) relative to the full forward. The three are
timed interleaved, ``--repeats`` rounds after one warm-up (compilation excluded); medians.

    .venv/bin/python benchmarks/forward35.py [--layers 4 --batch 2 --seq 1024 --repeats 3 --vocab 248320]

``--compile-layers N`` instead measures the compile time of the jitted forward of an N-layer model with the
Qwen3.5-27B layer pattern (3 Gated DeltaNet + 1 full attention, repeated) at small widths (hidden 256), and
prints ``forward35-compile: layers=N seconds=S``.

Last line (machine-readable): ``forward35: speed_vs_torch=R capture_over_forward=C``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def layer_types(n: int) -> tuple[str, ...]:
    return tuple("full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(n))


def config_2b(layers: int, vocab: int):
    from qwen_sae_jax.models.qwen3_5.config import Qwen3_5Config

    return Qwen3_5Config(vocab_size=vocab, hidden_size=2048, num_hidden_layers=layers, num_attention_heads=8,
                         num_key_value_heads=2, layer_types=layer_types(layers), intermediate_size=6144, head_dim=256,
                         rope_theta=1e7, tie_word_embeddings=True, linear_num_key_heads=16, linear_num_value_heads=16)


def measure_compile(layers: int) -> None:
    import jax
    import numpy as np

    from qwen_sae_jax.lm import LanguageModel
    from qwen_sae_jax.models.qwen3_5.config import Qwen3_5Config
    from qwen_sae_jax.models.qwen3_5.params import abstract_params

    config = Qwen3_5Config(vocab_size=1024, hidden_size=256, num_hidden_layers=layers, num_attention_heads=4,
                           num_key_value_heads=2, layer_types=layer_types(layers), intermediate_size=512, head_dim=64,
                           linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=32,
                           linear_value_head_dim=32)
    lm = LanguageModel(config, abstract_params(config))
    ids = jax.ShapeDtypeStruct((1, 256), np.int32)
    start = time.perf_counter()
    jax.jit(lambda p, x: lm.apply(p, x)[0]).lower(lm.params, ids).compile()
    print(f"forward35-compile: layers={layers} seconds={time.perf_counter() - start:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=248320)
    parser.add_argument("--compile-layers", type=int, default=0,
                        help="only measure the compile time of this many layers")
    args = parser.parse_args()
    if args.compile_layers:
        measure_compile(args.compile_layers)
        return

    import jax
    import numpy as np
    import torch
    import transformers

    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.models.qwen3_5.params import init_params, save_hf

    config = config_2b(args.layers, args.vocab)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model")
        save_hf(init_params(config, seed=0), config, path)
        lm = load_model(path)
        hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                               attn_implementation="eager").eval()

    ids = np.random.RandomState(0).randint(0, args.vocab, (args.batch, args.seq)).astype(np.int32)
    ids_t = torch.tensor(ids, dtype=torch.long)
    half = f"layers.{args.layers // 2 - 1}"
    with torch.inference_mode():  # the two implementations agree on these weights (float32), over two chunks
        want = hf(input_ids=ids_t[:1, :130]).logits.numpy()
    rel = float(np.abs(np.asarray(lm.logits(ids[:1, :130])) - want).max() / np.abs(want).max())

    def torch_forward():
        with torch.inference_mode():
            hf(input_ids=ids_t).logits

    runs = {"torch": torch_forward,
            "forward": lambda: jax.block_until_ready(lm.logits(ids)),
            "capture": lambda: jax.block_until_ready(lm.capture(ids, [half]))}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(args.repeats + 1):  # round 0 warms up (compiles the JAX programs)
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    t = {name: statistics.median(v) for name, v in times.items()}
    tokens = args.batch * args.seq

    print(f"device: {jax.devices()[0].platform} x{len(jax.devices())}, torch threads {torch.get_num_threads()}; "
          f"{args.layers} layers ({', '.join(config.layer_types)}), batch {args.batch} x {args.seq}, vocab "
          f"{args.vocab}; max |logits diff| / max |logits| = {rel:.1e}")
    print(f"torch forward          {t['torch'] * 1e3:9.1f} ms  {tokens / t['torch']:10.0f} tok/s")
    print(f"jax   forward (logits) {t['forward'] * 1e3:9.1f} ms  {tokens / t['forward']:10.0f} tok/s")
    print(f"jax   capture {half:<9}{t['capture'] * 1e3:9.1f} ms  {tokens / t['capture']:10.0f} tok/s")
    print(f"forward35: speed_vs_torch={t['torch'] / t['forward']:.2f} "
          f"capture_over_forward={t['capture'] / t['forward']:.2f}")


if __name__ == "__main__":
    main()
