"""Logit lens of decoder rows against a hand computation in numpy."""
import types

import numpy as np
import pytest

from qwen_sae_jax.analysis.logit_lens import logit_lens, sae_logit_lens, unembedding
from qwen_sae_jax.errors import UserError


def numpy_lens(directions, w_u, g, k):
    scores = (np.asarray(directions, np.float64) * np.asarray(g, np.float64)) @ np.asarray(w_u, np.float64)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    bottom = np.argsort(scores, axis=1, kind="stable")[:, :k]
    return scores, top, bottom


@pytest.mark.parametrize("chunk", [None, 3])
def test_logit_lens_equals_hand_computation(chunk):
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(7, 5)).astype(np.float32)
    w_u = rng.normal(size=(5, 11)).astype(np.float32)
    g = rng.uniform(0.5, 2.0, size=5).astype(np.float32)
    lens = logit_lens(directions, w_u, g, k=4, chunk=chunk)
    scores, top, bottom = numpy_lens(directions, w_u, g, 4)
    np.testing.assert_array_equal(lens.top_ids, top)
    np.testing.assert_array_equal(lens.bottom_ids, bottom)
    np.testing.assert_allclose(lens.top_values, np.take_along_axis(scores, top, 1), rtol=1e-5)
    np.testing.assert_allclose(lens.bottom_values, np.take_along_axis(scores, bottom, 1), rtol=1e-5)
    assert (np.diff(lens.top_values, axis=1) <= 0).all() and (np.diff(lens.bottom_values, axis=1) >= 0).all()


def test_tiny_example_by_hand():
    """d = e0, g = 1, W_U columns = token vectors: token 2 has +3 on e0, token 0 has -1."""
    w_u = np.array([[-1.0, 0.5, 3.0, 0.0], [9.0, 9.0, 9.0, 9.0]], np.float32)
    lens = logit_lens(np.array([[1.0, 0.0]], np.float32), w_u, None, k=1)
    assert lens.top_ids.tolist() == [[2]] and lens.top_values.tolist() == [[3.0]]
    assert lens.bottom_ids.tolist() == [[0]] and lens.bottom_values.tolist() == [[-1.0]]


def test_sae_logit_lens_uses_tied_embeddings_norm_and_act_scale(tiny_lm, tiny_sae):
    import copy

    import jax.numpy as jnp

    assert tiny_lm.config.tie_word_embeddings
    # a random HF model's final norm weights are all ones, which would hide a lens that ignores them:
    # a copy of the model with signed, uneven weights (a negative one flips that coordinate's contribution)
    g = np.random.default_rng(1).uniform(-2.0, 2.0, tiny_lm.config.hidden_size).astype(np.float32)
    lm = copy.copy(tiny_lm)
    lm.params = {**tiny_lm.params, "model": {**tiny_lm.params["model"], "norm": {"weight": jnp.asarray(g)}}}
    sae = tiny_sae.replace(act_scale=jnp.asarray(2.0, jnp.float32))
    lens = sae_logit_lens(lm, sae, k=5, features=[3, 0])
    n_tokens = len(lm.tokenizer)                          # 259 real tokens; the embedding has 272 rows
    assert n_tokens < lm.config.vocab_size
    emb = np.asarray(lm.params["model"]["embed_tokens"]["embedding"])[:n_tokens]   # [V, D]
    rows = np.asarray(sae.W_dec)[[3, 0]] / 2.0
    scores, top, bottom = numpy_lens(rows, emb.T, g, 5)
    np.testing.assert_array_equal(lens.top_ids, top)
    np.testing.assert_array_equal(lens.bottom_ids, bottom)
    np.testing.assert_allclose(lens.top_values, np.take_along_axis(scores, top, 1), rtol=1e-4, atol=1e-6)
    assert lens.top_ids.max() < n_tokens and lens.bottom_ids.max() < n_tokens
    _, unnormed_top, _ = numpy_lens(rows, emb.T, np.ones_like(g), 5)
    assert (unnormed_top != top).any()                    # the norm weights change the ranking here


def test_untied_models_use_lm_head():
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)
    fake = types.SimpleNamespace(config=types.SimpleNamespace(tie_word_embeddings=False),
                                 params={"lm_head": {"kernel": kernel}, "model": {"norm": {"weight": np.ones(2)}}})
    w_u, g = unembedding(fake)
    np.testing.assert_array_equal(w_u, kernel)


def test_bad_input(tiny_lm, tiny_sae):
    with pytest.raises(UserError, match="out of range.*d_sae=48"):
        sae_logit_lens(tiny_lm, tiny_sae, features=[48])
    with pytest.raises(UserError, match=r"directions \[F, D\]"):
        logit_lens(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(UserError, match="k must be in"):
        logit_lens(np.zeros((2, 3)), np.zeros((3, 5)), k=6)
