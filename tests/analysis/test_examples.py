"""Streaming top-N examples, counts and histograms against brute force over the full activations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.analysis.examples import HIST_BINS, FeatureData, init_state, update


def brute_force_top(z, valid, n):
    """Per feature: [(value, seq, pos)] of the n largest positive activations over valid positions."""
    S, T, F = z.shape
    out = []
    for f in range(F):
        entries = [(z[s, t, f], s, t) for s in range(S) for t in range(T) if valid[s, t] and z[s, t, f] > 0]
        entries.sort(key=lambda e: -e[0])
        out.append(entries[:n])
    return out


def random_batches(S=10, T=7, F=6, seed=0):
    rng = np.random.default_rng(seed)
    # sparse non-negative latents (most zero), distinct values so the top-N is unique
    z = rng.exponential(1.0, size=(S, T, F)).astype(np.float32) * (rng.random((S, T, F)) < 0.3)
    z[:, :, 5] *= 40.0                                      # one feature on a much larger scale
    z[:, :, 4] = 0.0                                        # one dead feature
    ids = rng.integers(0, 50, size=(S, T)).astype(np.int32)
    real = np.ones((S, T), bool)
    real[3, 5:] = False                                     # a padded row
    valid = real.copy()
    valid[:, 0] = False                                     # first position excluded
    valid[2, 3] = False                                     # e.g. a special token
    return z, ids, real, valid


@pytest.mark.parametrize("batch", [1, 3, 4])
def test_streaming_top_n_equals_brute_force(batch):
    z, ids, real, valid = random_batches()
    S, T, F = z.shape
    n, left, right = 5, 2, 1
    state = init_state(F, n, left=left, right=right)
    step = jax.jit(update)
    for start in range(0, S, batch):
        sl = slice(start, start + batch)
        state = step(state, z[sl], ids[sl], valid[sl], real[sl], jnp.int32(start))
    data = FeatureData.from_state(state)

    expected = brute_force_top(z, valid, n)
    for f in range(F):
        got = data.examples(f)
        assert [(e["seq"], e["pos"]) for e in got] == [(s, t) for _, s, t in expected[f]]
        np.testing.assert_allclose([e["value"] for e in got], [v for v, _, _ in expected[f]], rtol=1e-6)
        for e in got:                                       # context windows: tokens and this feature's acts
            s, t = e["seq"], e["pos"]
            for j, offset in enumerate(range(-left, right + 1)):
                u = t + offset
                inside = 0 <= u < T and real[s, u]
                assert e["tokens"][j] == (ids[s, u] if inside else -1)
                assert e["acts"][j] == pytest.approx(z[s, u, f] if inside else 0.0)
            assert e["acts"][left] == pytest.approx(e["value"])

    fired = valid[..., None] & (z > 0)
    np.testing.assert_array_equal(data.fire_count, fired.sum(axis=(0, 1)))
    np.testing.assert_allclose(data.act_sum, np.where(fired, z, 0).sum(axis=(0, 1)), rtol=1e-5)
    assert data.n_tokens == valid.sum()
    np.testing.assert_allclose(data.density, fired.sum(axis=(0, 1)) / valid.sum())
    assert data.examples(4) == [] and data.max_act[4] == 0 and data.mean_act[4] == 0

    for f in range(F):                                      # histogram = np.histogram with the final range
        values = z[..., f][fired[..., f]]
        if values.size == 0:
            assert data.hist[f].sum() == 0
            continue
        top = 2.0 ** int(data.hist_exp[f])
        assert values.max() < top <= 2 * values.max()
        expected_hist, _ = np.histogram(values, bins=HIST_BINS, range=(0.0, top))
        np.testing.assert_array_equal(data.hist[f], expected_hist)
        np.testing.assert_allclose(data.hist_edges(f)[-1], top)


def test_fewer_positions_than_examples():
    """A batch smaller than N still works; empty slots are never reported as examples."""
    z = np.zeros((1, 2, 3), np.float32)
    z[0, 1, 0] = 2.5
    state = jax.jit(update)(init_state(3, n_examples=4, left=1, right=1), z, np.array([[7, 8]]), np.ones((1, 2), bool))
    data = FeatureData.from_state(state)
    assert [e["value"] for e in data.examples(0)] == [2.5]
    assert data.examples(0)[0]["tokens"] == [7, 8, -1]
    assert data.examples(1) == []


def test_collect_features_on_the_model_matches_capture(tiny_lm, tiny_sae, corpus_file):
    """The model driver (one jitted forward + encode per batch) against lm.capture + sae.encode on the
    whole corpus at once."""
    from qwen_sae_jax.analysis.collect import collect_features, special_ids_of
    from qwen_sae_jax.analysis.corpus import corpus_windows, position_mask, read_texts

    docs = read_texts(corpus_file, text_unit="line")
    windows = corpus_windows(tiny_lm.tokenizer, docs, ctx_len=24, max_tokens=400, pad_id=tiny_lm.pad_token_id)
    assert windows.num_tokens == 400 and windows.input_ids.shape[1] == 24
    data = collect_features(tiny_lm, {"sae": tiny_sae}, windows, n_examples=3, left=3, right=2,
                            batch_size=4)["sae"]

    ids, mask = windows.input_ids, windows.attention_mask
    acts = tiny_lm.capture(ids, [tiny_sae.cfg.hook_name], attention_mask=mask)[tiny_sae.cfg.hook_name]
    z = np.asarray(tiny_sae.encode(acts), np.float32)
    valid = np.asarray(position_mask(ids, mask, special_ids_of(tiny_lm), exclude_first=True))
    expected = brute_force_top(z, valid, 3)
    for f in range(tiny_sae.cfg.d_sae):
        got = data.examples(f)
        assert [(e["seq"], e["pos"]) for e in got] == [(s, t) for _, s, t in expected[f]]
        np.testing.assert_allclose([e["value"] for e in got], [v for v, _, _ in expected[f]], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(data.fire_count, (valid[..., None] & (z > 0)).sum(axis=(0, 1)))
    # a TopK SAE fires exactly k features at every counted position
    assert data.fire_count.sum() == tiny_sae.cfg.k * valid.sum()
