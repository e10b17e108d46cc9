"""Per-SAE optimizer: warmup + constant / cosine / linear decay, gradient clipping, Adam.

Only the trainable leaves of an SAE (``sae.training.trainable_mask``) are updated; the others (the input
scale, the threshold of topk/relu, BatchTopK's threshold which `after_update` sets) are left as they are
and have no moments. Clipping is by the global norm of one SAE's trainable gradient (each SAE has its own
optimizer state). The arithmetic is optax's ``multi_transform`` of ``chain(clip_by_global_norm, adam)``
(tests/train/test_optim.py checks it against optax step by step).

The update comes in two halves, so that the trainer's step can write the new moments into the stacked state
of a group and read them back before it moves the parameters (train/step.py says why):

    state  = opt.moments(grads, state)    # clip, then the moment updates and the step count
    params = opt.apply(params, state)     # params - lr(count - 1) * mu_hat / (sqrt(nu_hat) + eps)

``opt.update(grads, state, params)`` does both and returns ``(updates, state)`` like an optax transformation.
"""
from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import optax

from qwen_sae_jax.sae import SAE, trainable_mask
from qwen_sae_jax.train.config import OptimConfig

PARAM_FIELDS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "act_scale")


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


def trainable_fields(sae: SAE) -> tuple[str, ...]:
    """Names of the SAE's leaves the optimizer moves (the architecture decides: JumpReLU trains its threshold)."""
    mask = trainable_mask(sae)
    return tuple(f for f in PARAM_FIELDS if getattr(mask, f))


@flax.struct.dataclass
class AdamState:
    """One SAE's optimizer state (stacked with a leading [n] axis in a group of n hooks)."""
    count: jax.Array               # [] int32: updates taken
    mu: dict[str, jax.Array]       # first moments of the trainable leaves, keyed by field name
    nu: dict[str, jax.Array]       # second moments, same keys


@dataclasses.dataclass(frozen=True)
class SAEOptimizer:
    """Clipped Adam with an LR schedule over the trainable leaves of one SAE (module docstring)."""
    cfg: OptimConfig
    schedule: optax.Schedule

    def init(self, sae: SAE) -> AdamState:
        def zeros():   # separate arrays for mu and nu: a caller may donate the state
            return {f: jnp.zeros_like(getattr(sae, f)) for f in trainable_fields(sae)}
        return AdamState(count=jnp.zeros((), jnp.int32), mu=zeros(), nu=zeros())

    def moments(self, grads: SAE, state: AdamState) -> AdamState:
        """The state after one update with gradient ``grads`` (clipped by global norm first)."""
        g = {f: getattr(grads, f) for f in state.mu}
        if self.cfg.clip_norm is not None:
            norm = optax.tree.norm(g)
            g = jax.tree.map(lambda a: jnp.where(norm < self.cfg.clip_norm, a, a / norm * self.cfg.clip_norm), g)
        b1, b2 = self.cfg.b1, self.cfg.b2
        mu = {f: b1 * state.mu[f] + (1 - b1) * g[f] for f in g}
        nu = {f: b2 * state.nu[f] + (1 - b2) * jnp.square(g[f]) for f in g}
        return AdamState(count=optax.safe_increment(state.count), mu=mu, nu=nu)

    def apply(self, sae: SAE, state: AdamState) -> SAE:
        """``sae`` moved by the update that ``state`` (the output of `moments`) defines."""
        lr = self.schedule(state.count - 1)
        c1 = 1 - jnp.asarray(self.cfg.b1, jnp.float32) ** state.count
        c2 = 1 - jnp.asarray(self.cfg.b2, jnp.float32) ** state.count
        moved = {}
        for f in state.mu:
            step = (state.mu[f] / c1) / (jnp.sqrt(state.nu[f] / c2) + self.cfg.eps)
            p = getattr(sae, f)
            moved[f] = (p - lr * step).astype(p.dtype)
        return sae.replace(**moved)

    def update(self, grads: SAE, state: AdamState, params: SAE) -> tuple[SAE, AdamState]:
        """optax-style: ``(updates, new state)``, updates zero on the frozen leaves."""
        state = self.moments(grads, state)
        updates = jax.tree.map(lambda new, old: new - old, self.apply(params, state), params)
        return updates, state


def make_optimizer(cfg: OptimConfig, total_steps: int) -> SAEOptimizer:
    """The optimizer of one SAE (any SAE pytree; the trainable leaves follow its architecture)."""
    return SAEOptimizer(cfg, lr_schedule(cfg, total_steps))
