"""The trainer's step over a stacked group: the same result as updating each SAE on its own, and temporaries
that do not grow with the number of SAEs in the group (the moments are read back; train/step.py)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from qwen_sae_jax.config import load_config
from qwen_sae_jax.train.config import TrainConfig
from qwen_sae_jax.train.plan import make_plan
from qwen_sae_jax.train.step import Trainer, hook_state, sae_update

D_IN = 16


def trainer(n: int, architecture: str, d_sae: int = 64, batch: int = 32) -> Trainer:
    hooks = ",".join(f"blocks.{i}.hook_resid_post" for i in range(n))
    k = "saes.0.k=null" if architecture in ("jumprelu", "relu") else "saes.0.k=4"
    cfg = load_config(TrainConfig, "configs/tiny.yaml",
                      [f"saes.0.architecture={architecture}", f"saes.0.d_sae={d_sae}", k,
                       "saes.0.expansion_factor=null", "saes.0.optim.warmup_steps=0", "saes.0.dead_tokens_threshold=64",
                       f"train.batch_size={batch}", f"buffer.size={4 * batch}", f"hooks=[{hooks}]"])
    mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    return Trainer(cfg, make_plan(cfg, n, D_IN), mesh)


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "jumprelu"])
def test_stacked_step_equals_one_sae_at_a_time(architecture):
    n = 3
    tr = trainer(n, architecture)
    state = tr.init_state(jax.random.key(0), jax.random.normal(jax.random.key(1), (n, 64, D_IN)))
    # each SAE on its own, from the same start
    alone = [tuple(hook_state(t, j, n) for t in (state[0].sae, state[0].opt_state, state[0].tokens_since_fired))
             for j in range(n)]
    ready = jax.random.normal(jax.random.key(2), (n, 3, 32, D_IN)) * jnp.arange(1, n + 1)[:, None, None, None]
    update = jax.jit(functools.partial(sae_update, opt=tr.optimizers[0]))
    losses = []
    for step in range(3):
        alone_m = []
        for j in range(n):
            alone[j], m = update(*alone[j], ready[j, step])
            alone_m.append(float(m["loss"]))
        state, metrics = tr.step(state, ready, step)
        np.testing.assert_allclose(np.asarray(metrics[0]["loss"]), alone_m, rtol=1e-5)
        losses.append(alone_m)
    for j in range(n):
        got = jax.tree.map(lambda a: np.asarray(a[j]), (state[0].sae, state[0].opt_state, state[0].tokens_since_fired))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, np.asarray(b), rtol=2e-5, atol=1e-6), got, alone[j])
    assert losses[-1] != losses[0]      # the SAEs did move


def test_step_temporaries_do_not_grow_with_the_group():
    """Writing an SAE's parameters and moments together made XLA copy the whole stacked moments inside the
    loop, so the temporaries grew with n; with the read-back they are those of one SAE."""
    def temp(n):
        tr = trainer(n, "topk", d_sae=1024, batch=64)
        abstract = tr.abstract_state(16)
        ready = jax.ShapeDtypeStruct((n, 2, 64, D_IN), jnp.float32)
        compiled = jax.jit(tr._step_fn, donate_argnums=0).lower(abstract, ready, jnp.int32(0)).compile()
        return compiled.memory_analysis().temp_size_in_bytes
    stacked_moments_per_sae = 2 * 2 * D_IN * 1024 * 4          # mu and nu of W_enc and W_dec
    assert temp(12) - temp(3) < 2 * stacked_moments_per_sae
