"""The SFT objective and the compiled update step (AdamW, clipping, optional gradient checkpointing), sharded.

Loss on reply tokens only: position t predicts token t + 1, and counts when token t + 1 is a reply token
(``reply[:, 1:]``; `posttrain.chat` builds the mask from the chat template)::

    CE = sum_{b, t: reply[b, t+1]} -log p(ids[b, t+1] | ids[b, :t+1])  /  #{(b, t): reply[b, t+1]}

plus ``lambda * sum_hooks SASFT_hook`` (`posttrain.sasft`) when probes are given. Both are means over the
global batch, so 1 device and N devices compute the same step.

Sharding: the parameters keep the shardings ``load_model(mesh=...)`` gave them (the family's partition
rules), the AdamW moments take their parameter's sharding, counters are replicated, the batch is split over
``data``. Gradient checkpointing (`remat_forward`): ``layers`` checkpoints each decoder layer (the backward pass
keeps each layer's input and output and recomputes inside the layer), the other modes wrap the whole forward in
one ``jax.checkpoint`` with a policy (`REMAT`).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from qwen_sae_jax.cross_entropy import next_token_nll, shift_left
from qwen_sae_jax.posttrain.config import SFTOptimConfig
from qwen_sae_jax.posttrain.sasft import sasft_term
from qwen_sae_jax.train.optim import lr_schedule

REMAT: dict[str, Callable | None] = {
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}
REMAT_MODES = ("none", "layers", *REMAT)


def remat_forward(lm, remat: str, capture: tuple[str, ...] = ()) -> Callable:
    """``forward(params, ids, mask) -> (logits, {hook: activation})`` (`LanguageModel.apply` with ``capture``)
    under the gradient-checkpointing mode ``remat``: ``none``; ``layers``: every decoder layer is one
    ``jax.checkpoint`` (``nn.remat``, nothing saved inside; the captures leave the layers as its outputs);
    ``dots`` / ``dots_no_batch`` / ``full``: the whole forward is one ``jax.checkpoint`` with that `REMAT`
    policy."""
    if remat not in REMAT_MODES:
        raise ValueError(f"remat={remat!r}; valid: {REMAT_MODES}")

    def forward(params, ids, mask):
        return lm.apply(params, ids, mask, capture=capture, remat_layers=remat == "layers")

    return jax.checkpoint(forward, policy=REMAT[remat]) if remat in REMAT else forward


@flax.struct.dataclass
class Batch:
    """One global batch (arrays), or the shardings of one (`batch_sharding`)."""

    ids: Any         # [B, T] int32
    mask: Any        # [B, T] int32 (1 = token)
    reply: Any       # [B, T] bool
    language: Any    # [B] int32 (reply language index; -1 without SASFT)


def make_optimizer(cfg: SFTOptimConfig, total_steps: int) -> optax.GradientTransformation:
    """Global-norm clipping (optional), then AdamW on the schedule of `train.optim.lr_schedule`."""
    adamw = optax.adamw(lr_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                        weight_decay=cfg.weight_decay)
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw) if cfg.clip_norm is not None else adamw


def reply_ce(logits: jax.Array, ids: jax.Array, reply: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(mean CE over reply targets, number of targets)`` for ``logits [B, T, V]``, ``ids``/``reply [B, T]``."""
    nll = next_token_nll(logits, ids)                                                     # [B, T]
    target = shift_left(reply.astype(bool))                                                # [B, T]
    n = jnp.sum(target)
    return jnp.sum(jnp.where(target, nll, 0.0)) / jnp.maximum(n, 1), n


def make_loss(lm, probes: tuple = (), coefficient: float = 0.0, zero_threshold: bool = False,
              remat: str = "none") -> Callable:
    """``loss(params, batch, probes) -> (loss, {"ce", "sasft", "targets"})``; ``remat``: `remat_forward`'s mode."""
    forward = remat_forward(lm, remat, tuple(p.hook for p in probes))

    def loss(params, batch: Batch, probes):
        logits, acts = forward(params, batch.ids, batch.mask)
        ce, n = reply_ce(logits, batch.ids, batch.reply)
        aux = sum((sasft_term(acts[p.hook], p, batch.reply, batch.language, zero_threshold) for p in probes),
                  jnp.float32(0.0))
        return ce + coefficient * aux, {"ce": ce, "sasft": aux, "targets": n}

    return loss


def state_shardings(params: Any, opt: optax.GradientTransformation, mesh: Mesh) -> tuple[Any, Any]:
    """``(param shardings, optimizer-state shardings)``: moments follow their parameter, the rest replicated."""
    param_sh = jax.tree.map(lambda x: x.sharding, params)
    replicated = NamedSharding(mesh, P())
    abstract = jax.eval_shape(opt.init, params)
    opt_sh = optax.tree_map_params(opt, lambda _, s: s, abstract, param_sh,
                                   transform_non_params=lambda _: replicated)
    return param_sh, opt_sh


def batch_sharding(mesh: Mesh) -> Batch:
    rows = NamedSharding(mesh, P("data", None))
    return Batch(rows, rows, rows, NamedSharding(mesh, P("data")))


def make_step(loss: Callable, opt: optax.GradientTransformation, param_sh, opt_sh, mesh: Mesh,
              batch_sh: Any = None) -> Callable:
    """Jitted ``step(params, opt_state, batch, probes) -> (params, opt_state, metrics)`` (params and optimizer
    state donated); metrics: loss, grad_norm and the loss's own terms (SFT: ce, sasft, targets). ``batch_sh``:
    the shardings of ``batch`` (default: an SFT `Batch`, rows over ``data``); ``probes`` is replicated."""
    def step(params, opt_state, batch, probes):
        (value, terms), grads = jax.value_and_grad(loss, has_aux=True)(params, batch, probes)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": value, "grad_norm": optax.tree.norm(grads), **terms}

    replicated = NamedSharding(mesh, P())
    batch_sh = batch_sharding(mesh) if batch_sh is None else batch_sh
    return jax.jit(step, in_shardings=(param_sh, opt_sh, batch_sh, replicated),
                   out_shardings=(param_sh, opt_sh, replicated), donate_argnums=(0, 1))
