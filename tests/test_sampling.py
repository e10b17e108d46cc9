"""Next-token sampling (`models.generate.sample_next`) against a numpy reference on fixed logits: temperature
scaling, nucleus (top-p) masking, greedy decoding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.models.generate import sample_next

# no ties, so the nucleus is unambiguous; row 1 nearly flat (top-p keeps several tokens)
LOGITS = np.array([[2.0, 1.0, 0.5, -1.0, 0.0, 3.0],
                   [0.1, 0.25, 0.3, 0.45, 0.5, 0.6]], np.float32)
N = 20000


def reference_probs(logits, temperature, top_p=None):
    """softmax(logits / T), restricted to the smallest set of most likely tokens whose mass reaches top_p
    (a token is kept when the tokens more likely than it hold less than top_p), renormalised."""
    z = np.asarray(logits, np.float64) / temperature
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    if top_p is not None:
        for row in p:
            order = np.argsort(-row)
            before = np.cumsum(row[order]) - row[order]
            row[order[before >= top_p]] = 0.0
        p /= p.sum(-1, keepdims=True)
    return p


def sample_frequencies(temperature, top_p):
    keys = jax.random.split(jax.random.key(0), N)
    fn = jax.jit(jax.vmap(lambda key, t, p: sample_next(jnp.asarray(LOGITS), key, t, p, greedy=False,
                                                        use_top_p=top_p is not None), in_axes=(0, None, None)))
    tokens = np.asarray(fn(keys, jnp.float32(temperature), jnp.float32(1.0 if top_p is None else top_p)))  # [N, B]
    return np.stack([np.bincount(tokens[:, b], minlength=LOGITS.shape[1]) / N for b in range(LOGITS.shape[0])])


@pytest.mark.parametrize("temperature, top_p", [(1.0, None), (0.5, None), (2.0, None), (1.0, 0.7), (0.6, 0.9),
                                                (1.5, 0.5)])
def test_sampling_frequencies_match_the_reference(temperature, top_p):
    want = reference_probs(LOGITS, temperature, top_p)
    got = sample_frequencies(temperature, top_p)
    assert not got[want == 0].any()                        # nothing outside the nucleus is ever drawn
    sigma = np.sqrt(want * (1 - want) / N)
    np.testing.assert_array_less(np.abs(got - want), 5 * sigma + 2e-3)


def test_reference_distinguishes_the_settings():
    """The settings above differ by far more than the sampling tolerance, so a sampler ignoring temperature or
    top_p fails the frequency test."""
    base = reference_probs(LOGITS, 1.0)
    for t, p in ((0.5, None), (2.0, None), (1.0, 0.7), (1.5, 0.5)):
        assert np.abs(reference_probs(LOGITS, t, p) - base).max() > 0.05
    assert (reference_probs(LOGITS, 1.0, 0.7)[0] > 0).sum() == 2
    assert (reference_probs(LOGITS, 1.5, 0.5)[1] > 0).sum() == 3


def test_greedy_and_tiny_top_p_take_the_argmax():
    key = jax.random.key(3)
    want = LOGITS.argmax(-1)
    np.testing.assert_array_equal(sample_next(jnp.asarray(LOGITS), key, 1.0, 1.0, greedy=True, use_top_p=False), want)
    for k in jax.random.split(key, 20):
        np.testing.assert_array_equal(sample_next(jnp.asarray(LOGITS), k, 1.0, 1e-6, greedy=False, use_top_p=True),
                                      want)
