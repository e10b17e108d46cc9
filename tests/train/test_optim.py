"""Per-SAE optimizer: LR schedule shapes, clipping, and frozen leaves."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qwen_sae_jax.sae import SAEConfig, init_sae, trainable_mask
from qwen_sae_jax.train.config import OptimConfig
from qwen_sae_jax.train.optim import lr_schedule, make_optimizer


@pytest.mark.parametrize("decay, decay_steps, at", [
    ("constant", None, {0: 0.0, 5: 0.5, 10: 1.0, 60: 1.0, 99: 1.0}),
    ("linear", None, {10: 1.0, 55: 0.5, 100: 0.0}),
    ("cosine", None, {10: 1.0, 55: 0.5, 100: 0.0}),
    ("linear", 20, {10: 1.0, 80: 1.0, 90: 0.5, 100: 0.0}),
])
def test_schedule(decay, decay_steps, at):
    fn = lr_schedule(OptimConfig(lr=1.0, warmup_steps=10, decay=decay, decay_steps=decay_steps), total_steps=100)
    for step, want in at.items():
        assert float(fn(step)) == pytest.approx(want, abs=1e-6), step


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_decay_shape_between_the_ends(decay):
    """Every step against the closed form: cosine and linear agree at the start, middle and end of the
    decay, so only the points in between tell them apart (0.1 + 0.9 * 0.854 vs 0.1 + 0.9 * 0.75 at a quarter)."""
    cfg = OptimConfig(lr=2.0, warmup_steps=10, decay=decay, final_lr_ratio=0.1)
    fn = lr_schedule(cfg, total_steps=90)
    steps = np.arange(91)
    frac = np.clip((steps - 10) / 80, 0.0, 1.0)
    shape = 0.5 * (1 + np.cos(np.pi * frac)) if decay == "cosine" else 1 - frac
    want = np.where(steps < 10, 2.0 * steps / 10, 2.0 * (0.1 + 0.9 * shape))
    np.testing.assert_allclose([float(fn(s)) for s in steps], want, rtol=1e-5, atol=1e-6)


def test_final_ratio_and_clipping():
    fn = lr_schedule(OptimConfig(lr=2.0, warmup_steps=0, decay="cosine", final_lr_ratio=0.1), total_steps=50)
    assert float(fn(0)) == pytest.approx(2.0) and float(fn(50)) == pytest.approx(0.2)
    sae = init_sae(SAEConfig(architecture="topk", d_in=4, d_sae=8, k=2), jax.random.key(0))
    grads = jax.tree.map(lambda a: jnp.full_like(a, 100.0), sae)
    # b1 = b2 = 0 and eps = 1: the Adam update is lr * g / (|g| + 1), so it shows the clipped gradient
    for clip, expect in ((1e-3, 1e-3), (None, 0.99)):
        opt = make_optimizer(OptimConfig(lr=1.0, warmup_steps=0, clip_norm=clip, b1=0.0, b2=0.0, eps=1.0), 10)
        updates, _ = opt.update(grads, opt.init(sae), sae)
        biggest = float(jnp.abs(updates.W_enc).max())
        assert (biggest < expect) if clip else (biggest > expect)
        # frozen leaves (act_scale, the threshold of a topk SAE) get exactly zero
        assert float(updates.act_scale) == 0.0 and not np.asarray(updates.threshold).any()
    jump = init_sae(SAEConfig(architecture="jumprelu", d_in=4, d_sae=8), jax.random.key(0))
    opt = make_optimizer(OptimConfig(lr=0.1, warmup_steps=0), 10)
    g = jax.tree.map(jnp.ones_like, jump)
    updates, _ = opt.update(g, opt.init(jump), jump)
    assert np.asarray(updates.threshold).all()          # JumpReLU thresholds are trained
    new = optax.apply_updates(jump, updates)
    assert float(new.act_scale) == float(jump.act_scale)


def optax_reference(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """The same optimizer written with optax: clip + Adam + schedule on the trainable leaves, zero elsewhere."""
    inner = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm is not None else []
    inner.append(optax.adam(lr_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))

    def labels(sae):
        return jax.tree.map(lambda t: "train" if t else "frozen", trainable_mask(sae))
    return optax.multi_transform({"train": optax.chain(*inner), "frozen": optax.set_to_zero()}, labels)


@pytest.mark.parametrize("architecture, clip", [("topk", 1.0), ("jumprelu", 0.5), ("batchtopk", None)])
def test_matches_optax_step_by_step(architecture, clip):
    cfg = OptimConfig(lr=0.05, warmup_steps=2, decay="cosine", clip_norm=clip, b1=0.8, b2=0.95)
    k = None if architecture == "jumprelu" else 2
    sae = init_sae(SAEConfig(architecture=architecture, d_in=4, d_sae=8, k=k), jax.random.key(0))
    ours, ref = make_optimizer(cfg, 6), optax_reference(cfg, 6)
    ours_state, ref_state, ours_sae, ref_sae = ours.init(sae), ref.init(sae), sae, sae
    for step in range(6):
        scale = 10.0 if step % 2 else 0.1          # clipped on odd steps (when clip is set), not on even ones
        grads = jax.tree.map(lambda a: scale * jax.random.normal(jax.random.key(step), a.shape), sae)
        ours_state = ours.moments(grads, ours_state)
        ours_sae = ours.apply(ours_sae, ours_state)
        updates, ref_state = ref.update(grads, ref_state, ref_sae)
        ref_sae = optax.apply_updates(ref_sae, updates)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours_sae, ref_sae)
    assert not np.allclose(ours_sae.W_enc, sae.W_enc)
    assert (np.asarray(ours_sae.threshold) != np.asarray(sae.threshold)).any() == (architecture == "jumprelu")


def test_init_state_can_be_donated():
    """mu and nu are distinct arrays, so a jitted update that donates the state does not donate one twice."""
    sae = init_sae(SAEConfig(architecture="topk", d_in=4, d_sae=8, k=2), jax.random.key(0))
    opt = make_optimizer(OptimConfig(lr=0.1, warmup_steps=0, clip_norm=None), 10)
    state = opt.init(sae)
    step = jax.jit(lambda g, s: opt.moments(g, s), donate_argnums=1)
    new = step(jax.tree.map(jnp.ones_like, sae), state)
    assert int(new.count) == 1 and float(new.mu["W_enc"][0, 0]) == pytest.approx(0.1)
