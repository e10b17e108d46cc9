"""The compiled training step: every SAE of every group updated from the same activation batch.

State per group (leading axis n = the group's hooks; a group of ONE hook stores its leaves without that
axis, which measured 1.12x faster per step on CPU than a size-1 stacked layout; `hook_state` reads either):

    sae                 SAE with stacked leaves (W_enc [n, d_in, d_sae], ...; cfg = the group's SAEConfig)
    opt_state           the variant's optax state, stacked the same way
    tokens_since_fired  [n, d_sae] int32 dead-latent counters

One step (inside one ``jax.jit``), for each group, a loop over its hooks (``fori_loop`` whose carry is the
stacked state, updated in place; no loop for a single hook):

    dead = tokens_since_fired >= dead_tokens_threshold
    (loss, terms), grads = value_and_grad(sae_loss)(sae, x, dead_mask=dead)   # AuxK / pre-act loss use dead
    grads = before_update(sae, grads)            # decoder-parallel gradient removed (unit-norm decoders)
    sae = apply_updates(sae, opt.update(...))    # clip, Adam, LR schedule; frozen leaves untouched
    sae = after_update(sae, terms)               # decoder renormalised, BatchTopK threshold EMA
    tokens_since_fired = update(..., terms.fired, finite tokens of the batch)

JumpReLU thresholds are trained by their gradient (pseudo-derivative) like any other parameter.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import Mesh

from qwen_sae_jax.sae import (
    SAE,
    after_update,
    before_update,
    dead_mask,
    init_sae_from_sample,
    sae_loss,
    update_tokens_since_fired,
)
from qwen_sae_jax.train.config import TrainConfig
from qwen_sae_jax.train.mesh import state_shardings
from qwen_sae_jax.train.optim import make_optimizer
from qwen_sae_jax.train.plan import Group, Plan

METRIC_KEYS = ("loss", "mse", "fvu", "aux", "sparsity", "l0", "dead_fraction", "n_nonfinite")


@flax.struct.dataclass
class GroupState:
    sae: SAE
    opt_state: Any
    tokens_since_fired: jax.Array   # [n, d_sae] int32


def hook_state(tree, j: int, n_hooks: int):
    """The leaves of hook ``j`` of a group of ``n_hooks`` (stacked for n > 1, unstacked for n == 1)."""
    return tree if n_hooks == 1 else jax.tree.map(lambda a: a[j], tree)


def sae_update(sae: SAE, opt_state, counter: jax.Array, x: jax.Array, opt: optax.GradientTransformation,
               implementation: str = "auto"):
    """One training update of one SAE on a batch ``x`` [B, d_in] (the module docstring's recipe); ``counter``
    [d_sae] is its tokens-since-fired. Returns ``((sae, opt_state, counter), metrics)``, metrics keyed by
    `METRIC_KEYS`. Traceable; the trainer's step and `benchmarks/sae_quality.py` both run it."""
    cfg = sae.cfg
    dead = dead_mask(counter, cfg)

    def loss_fn(s):
        return sae_loss(s, x, dead_mask=dead, implementation=implementation)

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(sae)
    grads = before_update(sae, grads)
    updates, opt_state = opt.update(grads, opt_state, sae)
    sae = after_update(optax.apply_updates(sae, updates), terms)
    n_tokens = x.shape[0] - terms.n_nonfinite
    counter = update_tokens_since_fired(counter, terms.fired, n_tokens, cfg)
    metrics = {"loss": loss, "mse": terms.mse, "fvu": terms.fvu, "aux": terms.aux,
               "sparsity": terms.sparsity, "l0": terms.l0,
               "dead_fraction": jnp.mean(dead_mask(counter, cfg).astype(jnp.float32)),
               "n_nonfinite": terms.n_nonfinite}
    return (sae, opt_state, counter), metrics


class Trainer:
    """Builds the optimizers, initial state and the jitted step for a `Plan` on a mesh."""

    def __init__(self, cfg: TrainConfig, plan: Plan, mesh: Mesh):
        self.cfg, self.plan, self.mesh = cfg, plan, mesh
        self.total_steps = cfg.total_steps
        self.optimizers = []
        for group in plan.groups:
            self.optimizers.append(make_optimizer(cfg.saes[group.variant_index].optim, self.total_steps))
        self._step: Callable | None = None

    # ------------------------------------------------------------------ state
    def _init_group(self, gi: int, group: Group, key: jax.Array, samples: jax.Array) -> GroupState:
        keys = jax.random.split(key, len(group.hooks))
        # sample rows are finite (the filter dropped NaN/inf)
        if len(group.hooks) == 1:   # unstacked (module docstring)
            sae = init_sae_from_sample(group.cfg, keys[0], samples[group.rows[0]])
            return GroupState(sae=sae, opt_state=self.optimizers[gi].init(sae),
                              tokens_since_fired=jnp.zeros((group.cfg.d_sae,), jnp.int32))
        sae = jax.vmap(lambda k, s: init_sae_from_sample(group.cfg, k, s))(keys, samples[jnp.asarray(group.rows)])
        opt_state = jax.vmap(self.optimizers[gi].init)(sae)
        counters = jnp.zeros((len(group.hooks), group.cfg.d_sae), jnp.int32)
        return GroupState(sae=sae, opt_state=opt_state, tokens_since_fired=counters)

    def abstract_state(self, num_samples: int) -> tuple:
        samples = jax.ShapeDtypeStruct((len(self.plan.hooks), num_samples, self.plan.d_in), jnp.float32)
        return jax.eval_shape(self._init_all, jax.random.key(0), samples)

    def _init_all(self, key, samples):
        keys = jax.random.split(key, len(self.plan.groups))
        return tuple(self._init_group(i, g, keys[i], samples) for i, g in enumerate(self.plan.groups))

    def shardings(self, abstract):
        return state_shardings(abstract, self.mesh, self.cfg.mesh.rules)

    def init_state(self, key: jax.Array, samples: jax.Array) -> tuple:
        """Fresh state for every group; ``samples`` [H, N, D] are activations of every hook (init of b_dec)."""
        abstract = jax.eval_shape(self._init_all, key, samples)
        return jax.jit(self._init_all, out_shardings=self.shardings(abstract))(key, samples)

    # ------------------------------------------------------------------ step
    def _group_step(self, gi: int, group: Group, state: GroupState, x: jax.Array):
        opt = self.optimizers[gi]
        # with d_sae split over 'model' a Pallas TopK runs once per shard (sae/kernels/sharded.py); it finds
        # the mesh through jax.set_mesh, which `step` sets while the step is traced
        implementation = self.cfg.saes[group.variant_index].implementation

        one = functools.partial(sae_update, opt=opt, implementation=implementation)

        stacked = (state.sae, state.opt_state, state.tokens_since_fired)
        n = len(group.hooks)
        if n == 1:   # unstacked state, no loop; metrics get the [n] axis for the logger
            new, metrics = one(*stacked, x[0])
            metrics = jax.tree.map(lambda a: a[None], metrics)
        else:
            # a loop whose carry is the whole stacked state: SAE i is read, updated and written back in
            # place, so only one SAE's temporaries are alive and the stack is never copied
            def body(i, carry):
                st, acc = carry
                cur = jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, i, keepdims=False), st)
                upd, m = one(*cur, lax.dynamic_index_in_dim(x, i, keepdims=False))
                st = jax.tree.map(lambda a, u: lax.dynamic_update_index_in_dim(a, u.astype(a.dtype), i, 0), st, upd)
                acc = {k: acc[k].at[i].set(v) for k, v in m.items()}
                return st, acc

            acc = {k: jnp.zeros((n,), jnp.int32 if k == "n_nonfinite" else jnp.float32) for k in METRIC_KEYS}
            new, metrics = lax.fori_loop(0, n, body, (stacked, acc))
        sae, opt_state, counter = new
        return GroupState(sae=sae, opt_state=opt_state, tokens_since_fired=counter), metrics

    def _step_fn(self, state: tuple, ready: jax.Array, cursor: jax.Array):
        x_all = lax.dynamic_index_in_dim(ready, cursor, axis=1, keepdims=False)        # [H, Bt, D]
        new_state, metrics = [], []
        for gi, group in enumerate(self.plan.groups):
            rows = group.rows
            x = x_all if rows == tuple(range(len(self.plan.hooks))) else x_all[jnp.asarray(rows)]
            s, m = self._group_step(gi, group, state[gi], x)
            new_state.append(s)
            metrics.append(m)
        return tuple(new_state), tuple(metrics)

    def step(self, state: tuple, ready: jax.Array, cursor: int):
        """One training step on batch ``ready[:, cursor]``; returns (new state, per-group metrics [n])."""
        if self._step is None:
            shardings = jax.tree.map(lambda a: a.sharding, state)
            self._step = jax.jit(self._step_fn, donate_argnums=(0,), out_shardings=(shardings, None))
        with jax.set_mesh(self.mesh):  # the context mesh the sharded Pallas TopK reads (traced on first call)
            return self._step(state, ready, jnp.asarray(cursor, jnp.int32))
