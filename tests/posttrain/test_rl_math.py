"""GRPO's pieces against plain numpy: group advantages, the clipped policy-gradient loss (both aggregations) and
its gradient, the k3 KL term, response log-probabilities, the repetition score on hand-made strings, the SAE
feature penalty, and the features file."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.posttrain.rl_grpo import group_advantages, grpo_loss_terms, k3_kl, response_logprobs
from qwen_sae_jax.posttrain.rl_reward import (
    FeatureProbe,
    repeated_ngram_fraction,
    repetition_score,
    sae_penalty,
)


def np_advantages(rewards, G, eps):
    out = np.zeros(len(rewards))
    for start in range(0, len(rewards), G):
        r = np.asarray(rewards[start:start + G], np.float64)
        out[start:start + G] = (r - r.mean()) / (r.std() + eps)
    return out


def test_group_advantages_match_numpy():
    rewards = np.asarray([0.0, -0.5, -0.25, -1.0, 0.3, 0.3, 0.3, 0.3, 1.0, 2.0, 4.0, 8.0], np.float32)
    for G in (2, 4):
        got = np.asarray(group_advantages(jnp.asarray(rewards), G, 1e-4))
        np.testing.assert_allclose(got, np_advantages(rewards, G, 1e-4), rtol=1e-5, atol=1e-6)
    got = np.asarray(group_advantages(jnp.asarray(rewards), 4, 1e-4))
    assert np.all(got[4:8] == 0)                              # a group of equal rewards teaches nothing
    np.testing.assert_allclose(got.reshape(-1, 4).mean(1), 0, atol=1e-6)


def np_loss(logp, old, ref, adv, m, clip_eps, beta, aggregate):
    B, N = logp.shape
    per, clipped_tok = np.zeros((B, N)), np.zeros((B, N))
    for b in range(B):
        for t in range(N):
            ratio = np.exp(logp[b, t] - old[b, t])
            plain, clipped = ratio * adv[b], min(max(ratio, 1 - clip_eps), 1 + clip_eps) * adv[b]
            d = ref[b, t] - logp[b, t]
            per[b, t] = -min(plain, clipped) + beta * (np.exp(d) - d - 1)
            clipped_tok[b, t] = clipped < plain
    if aggregate == "token":
        mean = lambda x: (x * m).sum() / m.sum()  # noqa: E731
    else:
        mean = lambda x: np.mean((x * m).sum(1) / m.sum(1))  # noqa: E731
    return mean(per), mean(clipped_tok)


@pytest.mark.parametrize("aggregate", ["token", "sequence"])
def test_clipped_loss_matches_numpy(aggregate):
    rng = np.random.default_rng(0)
    B, N = 6, 7
    logp = np.log(rng.uniform(0.05, 0.9, (B, N)))
    old = logp + rng.normal(0, 0.4, (B, N))                  # ratios well outside [0.8, 1.2] for many tokens
    ref = logp + rng.normal(0, 0.3, (B, N))
    adv = rng.normal(size=B)
    m = (np.arange(N)[None, :] < rng.integers(1, N + 1, B)[:, None]).astype(np.float64)
    want, want_clip = np_loss(logp, old, ref, adv, m, 0.2, 0.05, aggregate)
    f = lambda x: grpo_loss_terms(x, jnp.asarray(old), jnp.asarray(ref), jnp.asarray(adv), jnp.asarray(m),  # noqa
                                  clip_eps=0.2, kl_coef=0.05, aggregate=aggregate)
    (loss, terms), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(logp, jnp.float32))
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(terms["clip_frac"]), want_clip, rtol=1e-6)
    assert 0 < want_clip < 1
    # gradient against central differences of the numpy loss
    eps = 1e-5
    for b, t in [(0, 0), (1, 2), (3, 4), (5, 0)]:
        up, down = logp.copy(), logp.copy()
        up[b, t] += eps
        down[b, t] -= eps
        fd = (np_loss(up, old, ref, adv, m, 0.2, 0.05, aggregate)[0]
              - np_loss(down, old, ref, adv, m, 0.2, 0.05, aggregate)[0]) / (2 * eps)
        np.testing.assert_allclose(float(grad[b, t]), fd, rtol=1e-3, atol=1e-6)
    assert np.all(np.asarray(grad)[m == 0] == 0)              # padding after a response contributes nothing


def test_k3_kl_matches_numpy_and_estimates_kl():
    rng = np.random.default_rng(1)
    logp, ref = np.log(rng.uniform(0.01, 1, 50)), np.log(rng.uniform(0.01, 1, 50))
    want = np.exp(ref - logp) - (ref - logp) - 1
    np.testing.assert_allclose(np.asarray(k3_kl(jnp.asarray(logp), jnp.asarray(ref))), want, rtol=1e-5, atol=1e-7)
    assert np.all(want >= 0) and float(k3_kl(jnp.float32(-1.3), jnp.float32(-1.3))) == 0
    # unbiased: its mean over samples of pi is KL(pi || ref)
    p, q = np.asarray([0.5, 0.3, 0.2]), np.asarray([0.2, 0.3, 0.5])
    x = rng.choice(3, size=200_000, p=p)
    est = np.asarray(k3_kl(jnp.log(jnp.asarray(p[x])), jnp.log(jnp.asarray(q[x])))).mean()
    np.testing.assert_allclose(est, np.sum(p * np.log(p / q)), rtol=2e-2)


def test_response_logprobs_match_numpy():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 9, 13)).astype(np.float32)
    ids = rng.integers(0, 13, (2, 9))
    P = 5
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = np.asarray([[logp[b, P - 1 + t, ids[b, P + t]] for t in range(4)] for b in range(2)])
    np.testing.assert_allclose(np.asarray(response_logprobs(jnp.asarray(logits), jnp.asarray(ids), P)), want,
                               rtol=1e-5)


@pytest.mark.parametrize("text, n, unit, want", [
    ("the cat sat on the mat", 2, "word", 0.0),
    ("a b a b a b", 2, "word", 1 - 2 / 5),
    ("go go go go", 1, "word", 0.75),
    ("abcabc", 3, "char", 0.25),
    ("one two", 3, "word", 0.0),                              # fewer units than n
    ("", 2, "char", 0.0),
    ("x  y\n x y", 2, "word", 1 - 2 / 3),                     # whitespace of any kind separates words
])
def test_repetition_score_on_hand_made_strings(text, n, unit, want):
    assert repetition_score(text, [], n, unit) == pytest.approx(want)


def test_repetition_score_on_tokens():
    assert repeated_ngram_fraction([1, 2, 3, 1, 2, 3], 3) == pytest.approx(0.25)
    assert repetition_score("ignored", [7, 7, 7, 7, 7], 2, "token") == pytest.approx(0.75)
    with pytest.raises(UserError, match="token, word or char"):
        repetition_score("a", [1], 1, "sentence")


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_sae_penalty_matches_numpy(reduce):
    rng = np.random.default_rng(3)
    B, T, D, F = 3, 5, 8, 4
    acts, W, b = rng.normal(size=(B, T, D)), rng.normal(size=(D, F)), rng.normal(size=F)
    theta = np.asarray([0.0, 0.5, 0.0, 1.5])                # JumpReLU-style thresholds on two features
    resp = np.zeros((B, T), bool)
    resp[0, 2:], resp[1, 1:4], resp[2, 4] = True, True, True
    probe = FeatureProbe(jnp.asarray(W, jnp.float32), jnp.asarray(b, jnp.float32), jnp.asarray(theta, jnp.float32),
                         "layers.1")
    want = []
    for i in range(B):
        total = sum(p if p > th else 0.0 for t in range(T) if resp[i, t]
                    for p, th in zip(acts[i, t] @ W + b, theta))
        want.append(total / resp[i].sum() if reduce == "mean" else total)
    got = sae_penalty(jnp.asarray(acts, jnp.float32), probe, jnp.asarray(resp), reduce)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_features_file_round_trip_and_contrast(tmp_path):
    """A written file reads back through the package's features reader; contrast rankings by position."""
    from qwen_sae_jax.posttrain.rl_reward import features_from_contrast, write_features
    from qwen_sae_jax.posttrain.synthesis import read_targets

    write_features(tmp_path / "f.json", [("layers.1", 3), ("blocks.0.hook_resid_post", 1)], source="test")
    assert read_targets(tmp_path / "f.json") == [("layers.1", 3), ("layers.0", 1)]
    rank = lambda *fs: [{"hook": "layers.1", "feature": f, "mean_diff": 1.0} for f in fs]  # noqa: E731
    (tmp_path / "c.json").write_text(json.dumps({"top": {"layers.1": {
        "last": {"mean_diff": rank(5, 6), "rate_diff": rank(5)},
        "mean": {"mean_diff": rank(7, 8, 9), "rate_diff": rank(7)}}}}))
    assert features_from_contrast(tmp_path / "c.json", top=2) == [("layers.1", 7), ("layers.1", 8)]
    assert features_from_contrast(tmp_path / "c.json", top=5, position="last") == [("layers.1", 5), ("layers.1", 6)]


def test_rl_loss_with_per_layer_remat_matches_and_checkpoints_each_layer(tiny_model):
    """``train.remat=layers`` in the GRPO update: the same loss, terms and gradients as without remat (float32,
    off-policy log-probabilities so the ratio and the clipping matter), one checkpoint per decoder layer."""
    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.posttrain.rl_config import GRPOConfig
    from qwen_sae_jax.posttrain.rl_grpo import RLBatch, make_rl_loss
    from tests.models.remat_checks import checkpoint_equations

    lm = load_model(tiny_model)
    rng = np.random.default_rng(0)
    B, P, N = 4, 6, 8
    ids = rng.integers(3, lm.config.vocab_size, size=(B, P + N)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, :2] = 0                                                              # a left-padded prompt
    response = np.arange(N)[None, :] < np.asarray([8, 5, 8, 3])[:, None]
    batch = RLBatch(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(response),
                    jnp.asarray(rng.normal(-5.6, 0.3, (B, N)), jnp.float32),
                    jnp.asarray(rng.normal(-5.6, 0.3, (B, N)), jnp.float32), jnp.asarray([1.0, 0.0, 0.5, 2.0]))
    grpo = GRPOConfig(kl_coef=0.1)
    want, want_grad = jax.jit(jax.value_and_grad(make_rl_loss(lm, grpo, 2, P), has_aux=True))(lm.params, batch, ())
    loss = make_rl_loss(lm, grpo, 2, P, remat="layers")
    got, got_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(lm.params, batch, ())
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)
    assert 0 < float(want[1]["clip_frac"]) < 1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got_grad, want_grad)
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: loss(p, batch, ())[0]))(lm.params)
    assert checkpoint_equations(jaxpr) == lm.config.num_hidden_layers
