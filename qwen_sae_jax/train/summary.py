"""The final per-SAE table: reconstruction and sparsity on activations the SAEs were not trained on.

For each SAE, over ``eval.tokens`` filtered activations of held-out documents (``eval.holdout_every``):
FVU and explained variance (SAELens' definition, ``qwen_sae_jax.eval.metrics``), mean L0, and the dead
fraction from training (latents that had not fired in the last ``dead_tokens_threshold`` training tokens);
``eval_dead_fraction`` is the fraction that never fired on the evaluated tokens.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.eval.metrics import ActivationStats, activation_batch_sums
from qwen_sae_jax.sae import dead_mask
from qwen_sae_jax.train.distributed import to_host
from qwen_sae_jax.train.plan import Plan
from qwen_sae_jax.train.step import hook_state

COLUMNS = (("fvu", "FVU", "{:.4f}"), ("explained_variance", "expl.var", "{:.4f}"), ("l0", "L0", "{:.1f}"),
           ("dead_fraction", "dead %", "{:.1%}"))


def chunk_sums(sae, x: jax.Array, keep: jax.Array):
    """Evaluation sums of one SAE over the rows of ``x`` [C, D] where ``keep`` [C] is true."""
    x = x.astype(jnp.float32)
    z = sae.encode(x)
    return activation_batch_sums(x, sae.decode(z), z, keep)


def _sums(sae, pool, hook_row, start, chunk):
    x = jax.lax.dynamic_slice_in_dim(pool[hook_row], start, chunk, axis=0)    # [chunk, D]
    return chunk_sums(sae, x, jnp.ones((chunk,), bool))


def evaluate(plan: Plan, groups: tuple, pool: jax.Array, n_rows: int, chunk: int) -> dict[str, dict]:
    """Per SAE folder: metrics over ``pool[:, :n_rows]`` (``n_rows`` a multiple of ``chunk``)."""
    sums = jax.jit(_sums, static_argnums=(4,))
    results = {}
    for group, state in zip(plan.groups, groups):
        n = len(group.hooks)
        for j, (hook, row) in enumerate(zip(group.hooks, group.rows)):
            sae = hook_state(state.sae, j, n)
            dead = np.asarray(to_host(dead_mask(hook_state(state.tokens_since_fired, j, n), group.cfg)))
            stats = ActivationStats(d_in=plan.d_in, d_sae=group.cfg.d_sae)
            for start in range(0, n_rows, chunk):
                stats.add(to_host(sums(sae, pool, jnp.asarray(row), jnp.asarray(start), chunk)))
            s = stats.summary()
            results[group.folder(hook)] = {
                "hook": hook, "variant": group.name, "architecture": group.cfg.architecture,
                "d_sae": group.cfg.d_sae, "k": group.cfg.k, "fvu": s["fvu"],
                "explained_variance": s["explained_variance"], "l0": s["l0_mean"], "mse": s["mse"],
                "cossim": s["cossim"], "dead_fraction": float(dead.mean()),
                "eval_dead_fraction": s["dead_fraction"], "eval_tokens": s["n_tokens"]}
    return results


def format_table(results: dict[str, dict]) -> str:
    """A fixed-width table, one row per SAE, for the terminal."""
    name_w = max([len("SAE")] + [len(k) for k in results])
    head = f"{'SAE':<{name_w}}  " + "  ".join(f"{title:>9}" for _, title, _ in COLUMNS)
    lines = [head, "-" * len(head)]
    for folder, row in results.items():
        lines.append(f"{folder:<{name_w}}  " + "  ".join(f"{fmt.format(row[key]):>9}" for key, _, fmt in COLUMNS))
    return "\n".join(lines)
