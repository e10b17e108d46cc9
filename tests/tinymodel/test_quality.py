import math

import numpy as np

from qwen_sae_jax.tinymodel.quality import heldout_cross_entropy, unigram_entropy


def test_unigram_entropy_of_known_distribution():
    tokens = np.asarray([9] + [0, 1, 2, 3] * 50)          # the first token is not predicted
    assert math.isclose(unigram_entropy(tokens), math.log(4), rel_tol=1e-12)
    assert unigram_entropy(np.asarray([5, 7, 7, 7])) == 0.0


def test_heldout_cross_entropy_counts_every_target_once():
    vocab = 11
    tokens = np.arange(1000) % vocab
    uniform = heldout_cross_entropy(lambda ids: np.zeros(ids.shape + (vocab,)), tokens, ctx_len=64, batch=3)
    assert math.isclose(uniform, math.log(vocab), rel_tol=1e-9)

    seen = []

    def perfect(ids):                                      # knows the cycle: predicts (x + 1) % vocab
        seen.append(ids.size)
        logits = np.full(ids.shape + (vocab,), -1e9)
        np.put_along_axis(logits, ((ids + 1) % vocab)[..., None], 0.0, -1)
        return logits

    assert heldout_cross_entropy(perfect, tokens, ctx_len=64, batch=3) < 1e-6
    assert sum(seen) == len(tokens) - 1                    # windows overlap by one token only, partial one included
