"""Cost of SAE-spliced evaluation forwards against the clean forward, same model, same process.

Model: Qwen3-0.6B widths (hidden 1024, 16 heads, 8 kv heads, head_dim 128, intermediate 3072, vocab 151936,
tied embeddings) with ``--layers`` layers and random weights, or ``--model`` (e.g. ``tiny``). SAEs: TopK
(``--expansion`` x d_model latents, ``--k``) at all four sites of one layer (``layers.L.input``,
``layers.L.self_attn``, ``layers.L.mlp``, ``layers.L``), spliced together as ``qwen-sae eval`` splices a
layer group (``act -> where(mask, sae(act), act)`` through the intervention hooks, the code of
`qwen_sae_jax.eval.splice.replacement_intervention`). Measures tokens/s of
the jitted clean forward (logits) and of the spliced forward, and of the full per-group evaluation step
(`qwen_sae_jax.eval.splice.unit_sums`: spliced + zero-ablated + mean-ablated forwards, CE and KL), each
the median of ``--repeats`` interleaved timed runs after a warm-up (compilation excluded).

    .venv/bin/python benchmarks/eval.py [--layers 4 --batch 2 --seq 256 --expansion 8 --k 32 --repeats 5]

Last line (machine-readable): ``eval: spliced_over_clean=R`` (spliced forward time / clean forward time).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def timed(fns: dict, repeats: int) -> dict:
    """Median seconds per call of each function; the timed runs are interleaved (A B C A B C ...) so that
    load from other processes on the machine hits every function alike."""
    for fn in fns.values():
        fn()  # warm-up (compiles)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="use this model ('tiny', HF dir) instead of the random 0.6B-width one")
    parser.add_argument("--layers", type=int, default=4, help="layers of the random model")
    parser.add_argument("--layer", type=int, help="layer whose four sites get SAEs (default: the middle one)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from qwen_sae_jax.eval.splice import replacement_intervention, token_mask, unit_sums
    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.sae import SAEConfig, init_sae

    if args.model:
        lm = load_model(args.model)
    else:
        from qwen_sae_jax.models.qwen3 import Qwen3Config
        from qwen_sae_jax.models.qwen3.params import init_params, save_hf

        config = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                             num_hidden_layers=args.layers, num_attention_heads=16, num_key_value_heads=8,
                             head_dim=128, rope_theta=1e6, tie_word_embeddings=True)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model")
            save_hf(init_params(config, seed=0), config, path)
            lm = load_model(path)
    c = lm.config
    layer = c.num_hidden_layers // 2 if args.layer is None else args.layer
    hooks = [f"layers.{layer}.input", f"layers.{layer}.self_attn", f"layers.{layer}.mlp", f"layers.{layer}"]
    d_sae = args.expansion * c.hidden_size
    ids = np.random.RandomState(0).randint(0, c.vocab_size, (args.batch, args.seq)).astype(np.int32)
    ids_j, attn = jnp.asarray(ids), jnp.ones(ids.shape, jnp.int32)
    sample = lm.capture(ids[:1], hooks)
    saes = {h: init_sae(SAEConfig(architecture="topk", d_in=c.hidden_size, d_sae=d_sae, k=args.k, hook_name=h),
                        jax.random.key(i), x_sample=sample[h].reshape(-1, c.hidden_size))
            for i, h in enumerate(hooks)}
    means = {h: jnp.zeros((c.hidden_size,), jnp.float32) for h in hooks}
    tokens = args.batch * args.seq

    clean_fn = jax.jit(lambda p, x, m: lm.apply(p, x, m)[0])

    @jax.jit
    def spliced_fn(p, group, unit_means, x, m):     # one variant of the eval step, mode 0 = spliced
        mask = token_mask(x, m, None, exclude_first=True)
        interventions = {h: replacement_intervention(sae, unit_means[h], mask, jnp.int32(0))
                         for h, sae in group.items()}
        return lm.apply(p, x, m, interventions=interventions)[0]

    @jax.jit
    def unit_fn(p, group, unit_means, x, m, clean_logits):
        return unit_sums(lm, p, group, unit_means, x, m, token_mask(x, m, None, True), clean_logits)

    clean_logits = clean_fn(lm.params, ids_j, attn)
    t = timed({
        "clean": lambda: jax.block_until_ready(clean_fn(lm.params, ids_j, attn)),
        "spliced": lambda: jax.block_until_ready(spliced_fn(lm.params, saes, means, ids_j, attn)),
        "unit": lambda: jax.block_until_ready(unit_fn(lm.params, saes, means, ids_j, attn, clean_logits)),
    }, args.repeats)
    t_clean, t_spliced, t_unit = t["clean"], t["spliced"], t["unit"]

    print(f"device: {jax.devices()[0].platform} x{len(jax.devices())}; {c.num_hidden_layers} layers, d_model "
          f"{c.hidden_size}, vocab {c.vocab_size}; batch {args.batch} x {args.seq}; 4 TopK SAEs at layer {layer} "
          f"(d_sae {d_sae}, k {args.k})")
    print(f"clean forward                   {t_clean * 1e3:9.1f} ms  {tokens / t_clean:9.0f} tok/s")
    print(f"spliced forward (4 SAEs)        {t_spliced * 1e3:9.1f} ms  {tokens / t_spliced:9.0f} tok/s")
    print(f"eval step (spliced+zero+mean)   {t_unit * 1e3:9.1f} ms  {tokens / t_unit:9.0f} tok/s  "
          f"({t_unit / t_clean:.2f}x clean: three forwards + CE/KL)")
    print(f"eval: spliced_over_clean={t_spliced / t_clean:.2f}")


if __name__ == "__main__":
    main()
