"""The compiled training step: every SAE of every group updated from the same activation batch.

State per group (leading axis n = the group's hooks; a group of ONE hook stores its leaves without that
axis, which measured 1.12x faster per step on CPU than a size-1 stacked layout; `hook_state` reads either):

    sae                 SAE with stacked leaves (W_enc [n, d_in, d_sae], ...; cfg = the group's SAEConfig)
    opt_state           the variant's AdamState (train/optim.py), stacked the same way
    tokens_since_fired  [n, d_sae] int32 dead-latent counters

One step (inside one ``jax.jit``), for each group, a loop over its hooks (``fori_loop`` whose carry is the
stacked state, updated in place; no loop for a single hook):

    dead = tokens_since_fired >= dead_tokens_threshold
    (loss, terms), grads = value_and_grad(sae_loss)(sae, x, dead_mask=dead)   # AuxK / pre-act loss use dead
    grads = before_update(sae, grads)            # decoder-parallel gradient removed (unit-norm decoders)
    opt_state = opt.moments(grads, opt_state)    # clip, Adam moments, step count
    tokens_since_fired = update(..., terms.fired, finite tokens of the batch)
    -- the new moments and counters are written into the stack and read back --
    sae = after_update(opt.apply(sae, opt_state), terms)   # LR schedule; decoder renormalised, BatchTopK EMA

Why the moments are read back from the stack before the parameters move: XLA fuses the cheap moment update
into the fusion that writes the new parameters, so that fusion reads the OLD moments of SAE i from the stack,
while another fusion overwrites them in place. XLA then copies the whole stacked moments every iteration,
so a step of n SAEs did O(n^2) work: at 64 SAEs of 256 x 2048 the read-back form takes 4.3x less time per SAE
and 9.9x less temporary memory on CPU (benchmarks/stacked_step.py; docs/training.md).

JumpReLU thresholds are trained by their gradient (pseudo-derivative) like any other parameter.
"""
from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh

from qwen_sae_jax.sae import (
    SAE,
    LossTerms,
    after_update,
    before_update,
    dead_mask,
    init_sae_from_sample,
    sae_loss,
    update_tokens_since_fired,
)
from qwen_sae_jax.train.config import TrainConfig
from qwen_sae_jax.train.mesh import state_shardings
from qwen_sae_jax.train.optim import AdamState, SAEOptimizer, make_optimizer
from qwen_sae_jax.train.plan import Group, Plan

METRIC_KEYS = ("loss", "mse", "fvu", "aux", "sparsity", "l0", "dead_fraction", "n_nonfinite")


@flax.struct.dataclass
class GroupState:
    sae: SAE
    opt_state: AdamState
    tokens_since_fired: jax.Array   # [n, d_sae] int32


def _read(stack, i):
    """Entry ``i`` of every leaf of a stacked pytree."""
    return jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, i, keepdims=False), stack)


def _write(stack, value, i):
    """``stack`` with entry ``i`` of every leaf replaced by ``value``'s (in place inside a loop)."""
    return jax.tree.map(lambda a, v: lax.dynamic_update_index_in_dim(a, v.astype(a.dtype), i, 0), stack, value)


def hook_state(tree, j: int, n_hooks: int):
    """The leaves of hook ``j`` of a group of ``n_hooks`` (stacked for n > 1, unstacked for n == 1)."""
    return tree if n_hooks == 1 else jax.tree.map(lambda a: a[j], tree)


def sae_moments(sae: SAE, opt_state: AdamState, counter: jax.Array, x: jax.Array, opt: SAEOptimizer,
                implementation: str = "auto") -> tuple[AdamState, jax.Array, LossTerms, dict]:
    """The first half of one SAE's update on a batch ``x`` [B, d_in]: the loss, the new optimizer state and
    tokens-since-fired ``counter`` [d_sae]. Returns ``(opt_state, counter, terms, metrics)``, metrics keyed
    by `METRIC_KEYS`; `sae_update` shows how the parameters follow."""
    cfg = sae.cfg
    dead = dead_mask(counter, cfg)

    def loss_fn(s):
        return sae_loss(s, x, dead_mask=dead, implementation=implementation)

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(sae)
    opt_state = opt.moments(before_update(sae, grads), opt_state)
    n_tokens = x.shape[0] - terms.n_nonfinite
    counter = update_tokens_since_fired(counter, terms.fired, n_tokens, cfg)
    metrics = {"loss": loss, "mse": terms.mse, "fvu": terms.fvu, "aux": terms.aux,
               "sparsity": terms.sparsity, "l0": terms.l0,
               "dead_fraction": jnp.mean(dead_mask(counter, cfg).astype(jnp.float32)),
               "n_nonfinite": terms.n_nonfinite}
    return opt_state, counter, terms, metrics


def sae_update(sae: SAE, opt_state: AdamState, counter: jax.Array, x: jax.Array, opt: SAEOptimizer,
               implementation: str = "auto"):
    """One training update of one SAE on a batch ``x`` [B, d_in] (the module docstring's recipe); ``counter``
    [d_sae] is its tokens-since-fired. Returns ``((sae, opt_state, counter), metrics)``. Traceable; the
    trainer's single-hook step and `benchmarks/sae_quality.py` run it."""
    opt_state, counter, terms, metrics = sae_moments(sae, opt_state, counter, x, opt, implementation)
    return (after_update(opt.apply(sae, opt_state), terms), opt_state, counter), metrics


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

        stacked = (state.sae, state.opt_state, state.tokens_since_fired)
        n = len(group.hooks)
        if n == 1:   # unstacked state, no loop; metrics get the [n] axis for the logger
            new, metrics = sae_update(*stacked, x[0], opt, implementation)
            metrics = jax.tree.map(lambda a: a[None], metrics)
        else:
            # a loop whose carry is the whole stacked state: SAE i is read, updated and written back in
            # place, so only one SAE's temporaries are alive and the stack is never copied (module docstring:
            # the moments are written, then read back before the parameters move)
            def body(i, carry):
                (saes, opt_states, counters), acc = carry
                sae, opt_state, counter = _read((saes, opt_states, counters), i)
                x_i = lax.dynamic_index_in_dim(x, i, keepdims=False)
                opt_state, counter, terms, m = sae_moments(sae, opt_state, counter, x_i, opt, implementation)
                opt_states, counters = _write((opt_states, counters), (opt_state, counter), i)
                sae = after_update(opt.apply(sae, _read(opt_states, i)), terms)
                saes = _write(saes, sae, i)
                acc = {k: acc[k].at[i].set(v) for k, v in m.items()}
                return (saes, opt_states, counters), acc

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
