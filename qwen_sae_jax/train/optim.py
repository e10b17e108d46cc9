"""Per-variant optax optimizer: warmup + constant / cosine / linear decay, gradient clipping, Adam.

Only the trainable leaves of an SAE (``sae.training.trainable_mask``) are updated; the others (the input
scale, the threshold of topk/relu, BatchTopK's threshold which `after_update` sets) get zero updates.
Clipping is by the global norm of one SAE's gradient (each SAE has its own optimizer state).
"""
from __future__ import annotations

import optax

from qwen_sae_jax.sae import SAE, trainable_mask
from qwen_sae_jax.train.config import OptimConfig


def lr_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """LR per step: 0 -> lr over warmup, constant, then decay to lr * final_lr_ratio at ``total_steps``."""
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    warm = optax.linear_schedule(0.0, cfg.lr, warmup) if warmup else optax.constant_schedule(cfg.lr)
    if cfg.decay == "constant":
        return optax.join_schedules([warm, optax.constant_schedule(cfg.lr)], [warmup])
    after = max(total_steps - warmup, 1)
    decay_steps = after if cfg.decay_steps is None else min(cfg.decay_steps, after)
    final = cfg.lr * cfg.final_lr_ratio
    if cfg.decay == "cosine":
        decay = optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=cfg.final_lr_ratio)
    else:
        decay = optax.linear_schedule(cfg.lr, final, decay_steps)
    hold = after - decay_steps
    return optax.join_schedules([warm, optax.constant_schedule(cfg.lr), decay], [warmup, warmup + hold])


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """The optimizer of one SAE (any SAE pytree; the trainable leaves follow its architecture)."""
    inner = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm is not None else []
    inner.append(optax.adam(lr_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
    def labels(params: SAE) -> SAE:   # a function: an SAE is itself callable, which optax would misread
        mask = trainable_mask(params)
        return mask.replace(**{k: "train" if getattr(mask, k) else "frozen"
                               for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "act_scale")})

    return optax.multi_transform({"train": optax.chain(*inner), "frozen": optax.set_to_zero()}, labels)
