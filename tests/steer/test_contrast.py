"""The contrastive ranking recovers a planted feature; its statistics match a plain numpy reference."""
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.steer.contrast import matched_random_features, rank_features, set_stats

from .conftest import D_SAE, HIDDEN

WORDS = ["apple", "river", "stone", "green", "music", "paper", "light", "house", "cloud", "train", "bread", "chair"]
PLANTED = 17


def _planted_sae(lm, token_id: int):
    """A ReLU SAE on the embeddings (hook layers.0.input) whose feature PLANTED fires on ``token_id`` only."""
    from qwen_sae_jax.sae import SAE, SAEConfig

    cfg = SAEConfig(architecture="relu", d_in=HIDDEN, d_sae=D_SAE, hook_name="layers.0.input")
    rng = np.random.default_rng(0)
    e = np.asarray(lm.params["model"]["embed_tokens"]["embedding"][token_id], np.float32)   # [D]
    W_enc = (0.01 * rng.standard_normal((HIDDEN, D_SAE))).astype(np.float32)
    W_enc[:, PLANTED] = e / (e @ e)
    b_enc = np.full(D_SAE, -0.2, np.float32)   # other features (almost) never fire
    b_enc[PLANTED] = -0.5                 # fires at 0.5 on the token, not on others (|cos| well below 0.5)
    W_dec = rng.standard_normal((D_SAE, HIDDEN)).astype(np.float32)
    return SAE(W_enc=jnp.asarray(W_enc), b_enc=jnp.asarray(b_enc), W_dec=jnp.asarray(W_dec),
               b_dec=jnp.zeros(HIDDEN), threshold=jnp.zeros(D_SAE), act_scale=jnp.float32(1.0), cfg=cfg)


def _texts(lm, planted_id, n, seed, with_token):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        words = list(rng.choice(WORDS, size=int(rng.integers(2, 7))))
        text = " ".join(words) + (" the" if with_token else "")
        ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        if (planted_id in ids[:-1]) or (with_token != (ids[-1] == planted_id)):
            continue
        out.append(text)
    return out


def test_ranking_recovers_a_planted_feature_and_matches_numpy(lm):
    planted_id = lm.tokenizer(" the", add_special_tokens=False)["input_ids"][-1]
    sae = _planted_sae(lm, planted_id)
    pos = _texts(lm, planted_id, 11, seed=0, with_token=True)
    neg = _texts(lm, planted_id, 9, seed=1, with_token=False)
    result = rank_features(lm, {"layers.0.input": sae}, pos, neg, batch_size=4)["layers.0.input"]

    last = result["last"]
    assert last.ranking("mean_diff")[0] == PLANTED and last.ranking("rate_diff")[0] == PLANTED
    assert last.pos.rate["last"][PLANTED] == 1.0 and last.neg.rate["last"][PLANTED] == 0.0
    assert result["mean"].ranking("mean_diff")[0] == PLANTED
    assert last.top(1)[0]["feature"] == PLANTED
    assert last.ranking("mean_diff", sign=-1)[-1] == PLANTED

    # numpy reference: the hook is the embedding lookup, the SAE a plain ReLU encoder
    table = np.asarray(lm.params["model"]["embed_tokens"]["embedding"], np.float64)
    W_enc, b_enc = np.asarray(sae.W_enc, np.float64), np.asarray(sae.b_enc, np.float64)
    for texts, stats in [(pos, last.pos), (neg, last.neg)]:
        h = [table[lm.tokenizer(t, add_special_tokens=False)["input_ids"]] for t in texts]   # [T_i, D] each
        z = [np.maximum(x @ W_enc + b_enc, 0) for x in h]
        np.testing.assert_allclose(stats.mean["last"], np.mean([zi[-1] for zi in z], 0), atol=1e-5)
        np.testing.assert_allclose(stats.mean["mean"], np.mean([zi.mean(0) for zi in z], 0), atol=1e-5)
        np.testing.assert_allclose(stats.rate["mean"], np.mean([(zi > 0).mean(0) for zi in z], 0), atol=1e-6)
        np.testing.assert_allclose(stats.resid["last"], np.mean([x[-1] for x in h], 0), atol=1e-5)
        np.testing.assert_allclose(stats.norm["mean"], np.mean([np.linalg.norm(x, axis=-1).mean() for x in h]),
                                   rtol=1e-5)
        assert stats.n_texts == len(texts)
    np.testing.assert_allclose(last.direction, table[planted_id] - last.neg.resid["last"], atol=1e-5)


def test_matched_random_features_have_similar_rates_and_avoid_the_excluded():
    rate = np.linspace(0, 1, 200)
    picks = matched_random_features(rate, exclude=[100, 101], targets=[100], n=5, seed=0, pool=20)
    assert len(set(picks)) == 5 and not {100, 101} & set(picks)
    assert np.all(np.abs(rate[picks] - rate[100]) <= 11 / 199)   # among the 20 nearest (two excluded)
    assert picks == matched_random_features(rate, exclude=[100, 101], targets=[100], n=5, seed=0, pool=20)


def test_empty_sets_and_wrong_width_are_clear_errors(lm, saes):
    with pytest.raises(UserError, match="positive text set is empty"):
        rank_features(lm, saes, [], ["a"])
    with pytest.raises(UserError, match="negative text set is empty"):
        rank_features(lm, saes, ["a"], [])
    with pytest.raises(UserError, match="rank by 'mean' is not valid"):
        rank_features(lm, {"layers.0": saes["layers.0"]}, ["a b"], ["c d"])["layers.0"]["last"].ranking("mean")
    from .conftest import random_sae
    wide = random_sae("layers.0").replace(W_enc=jnp.zeros((8, D_SAE)))
    wide = wide.replace(cfg=wide.cfg.replace(d_in=8))
    with pytest.raises(UserError, match="reads 8-wide activations"):
        set_stats(lm, {"layers.0": wide}, ["a"])
