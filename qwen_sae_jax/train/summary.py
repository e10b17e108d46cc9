"""The final per-SAE table: reconstruction and sparsity on activations the SAEs were not trained on.

For each SAE, over the first ``eval.tokens`` filtered activations of held-out documents (``eval.holdout_every``),
streamed one model batch at a time after the training state is released (`evaluate_stream`):
FVU and explained variance (SAELens' definition, ``qwen_sae_jax.eval.metrics``), mean L0, and the dead
fraction from training (latents that had not fired in the last ``dead_tokens_threshold`` training tokens);
``eval_dead_fraction`` is the fraction that never fired on the evaluated tokens. ``layer_kind`` names the kind of
the SAE's layer ("full" attention or "linear" Gated DeltaNet, from the model's per-layer mixer: `Plan.layer_kinds`).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.eval.metrics import ActivationStats, activation_batch_sums
from qwen_sae_jax.hooks import parse
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


def _sums_at(sae, rows, hook_row, start, keep, chunk):
    x = jax.lax.dynamic_slice_in_dim(rows[hook_row], start, chunk, axis=0)          # [chunk, D]
    return chunk_sums(sae, x, jax.lax.dynamic_slice_in_dim(keep, start, chunk, axis=0))


def _first_kept(keep: jax.Array, remaining: jax.Array) -> jax.Array:
    """``keep`` [M] with only its first ``remaining`` true entries left true."""
    return keep & (jnp.cumsum(keep, dtype=jnp.int32) <= remaining)


def eval_chunk(rows_per_batch: int, batch_size: int) -> int:
    """The rows one SAE evaluates at a time: the largest divisor of a batch's rows up to the training batch
    (so the evaluation never holds more pre-activations than a training step)."""
    return next(c for c in range(min(batch_size, rows_per_batch), 0, -1) if rows_per_batch % c == 0)


def evaluate_stream(plan: Plan, saes: list, dead_fractions: list[list[float]], next_rows: Callable[[], tuple],
                    n_rows: int, chunk: int) -> dict[str, dict]:
    """Per SAE folder: metrics over the first ``n_rows`` kept rows of the batches ``next_rows()`` returns
    (``(rows [H, M, D], keep [M])``), one batch at a time, each SAE on ``chunk`` rows at a time.

    ``saes[g]`` is group g's (stacked) SAE, ``dead_fractions[g][j]`` its hook j's dead fraction from training.
    Memory: one batch of rows and one SAE's chunk, never a buffer of ``n_rows``."""
    sums_at = jax.jit(_sums_at, static_argnums=(5,))
    first_kept = jax.jit(_first_kept)
    stats = {(gi, j): ActivationStats(d_in=plan.d_in, d_sae=g.cfg.d_sae)
             for gi, g in enumerate(plan.groups) for j in range(len(g.hooks))}
    remaining = n_rows
    while remaining > 0:
        rows, keep = next_rows()
        keep = first_kept(keep, jnp.asarray(remaining, jnp.int32))
        per_chunk = np.asarray(to_host(keep)).reshape(-1, chunk).sum(axis=1)      # kept rows per chunk
        for gi, group in enumerate(plan.groups):
            for j, row in enumerate(group.rows):
                sae = hook_state(saes[gi], j, len(group.hooks))
                for c in np.flatnonzero(per_chunk):
                    stats[gi, j].add(to_host(sums_at(sae, rows, jnp.asarray(row), jnp.asarray(c * chunk), keep,
                                                     chunk)))
        remaining -= int(per_chunk.sum())
    results = {}
    for gi, group in enumerate(plan.groups):
        for j, hook in enumerate(group.hooks):
            s = stats[gi, j].summary()
            layer = parse(hook)[0]
            results[group.folder(hook)] = {
                "hook": hook, "layer_kind": plan.layer_kinds[layer] if layer < len(plan.layer_kinds) else None,
                "variant": group.name, "architecture": group.cfg.architecture,
                "d_sae": group.cfg.d_sae, "k": group.cfg.k, "fvu": s["fvu"],
                "explained_variance": s["explained_variance"], "l0": s["l0_mean"], "mse": s["mse"],
                "cossim": s["cossim"], "dead_fraction": dead_fractions[gi][j],
                "eval_dead_fraction": s["dead_fraction"], "eval_tokens": s["n_tokens"]}
    return results


def dead_fractions(plan: Plan, groups: tuple) -> list[list[float]]:
    """Per group and hook: the fraction of latents dead at the end of training (from the training state)."""
    return [[float(np.mean(to_host(dead_mask(hook_state(state.tokens_since_fired, j, len(g.hooks)), g.cfg))))
             for j in range(len(g.hooks))] for g, state in zip(plan.groups, groups)]


def format_table(results: dict[str, dict]) -> str:
    """A fixed-width table, one row per SAE, for the terminal; ``kind`` is the kind of the SAE's layer ("full" or
    "linear"; "-" for a row without it)."""
    name_w = max([len("SAE")] + [len(k) for k in results])
    head = f"{'SAE':<{name_w}}  {'kind':<6}  " + "  ".join(f"{title:>9}" for _, title, _ in COLUMNS)
    lines = [head, "-" * len(head)]
    for folder, row in results.items():
        lines.append(f"{folder:<{name_w}}  {row.get('layer_kind') or '-':<6}  "
                     + "  ".join(f"{fmt.format(row[key]):>9}" for key, _, fmt in COLUMNS))
    return "\n".join(lines)
