import numpy as np
import pytest
from flax import traverse_util

from qwen_sae_jax.tinymodel.train import ModelShape, TrainConfig, WindowSampler, lr_at, train

SHAPE = ModelShape(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                   num_key_value_heads=1, head_dim=16, vocab_size=64, max_position_embeddings=64)


def _streams():
    rng = np.random.default_rng(0)
    pattern = np.tile(np.arange(10, 42, dtype=np.uint16), 200)          # a learnable cycle
    noise = rng.integers(0, 64, 3000).astype(np.uint16)
    return {"a": pattern, "b": noise}


def _cfg(**kw):
    base = dict(seed=1, ctx_len=16, batch_size=4, lr=1e-2, warmup_steps=5, max_steps=40, time_budget_s=0,
                eval_every=20, eval_windows=4, checkpoint_every=10, plateau_evals=50,
                source_weights={"a": 0.7, "b": 0.3})
    base.update(kw)
    return TrainConfig(**base)


def test_sampler_is_seeded_and_respects_sources():
    streams = _streams()
    s1, s2 = WindowSampler(streams, {"a": 1.0, "b": 0.0}, 5), WindowSampler(streams, {"a": 1.0, "b": 0.0}, 5)
    b1, b2 = s1.batch(8, 17), s2.batch(8, 17)
    assert b1.shape == (8, 17) and (b1 == b2).all()
    assert (np.diff(b1, axis=1) % 32 == 1).all()            # every row is a window of the cycle


def test_lr_schedule_shape():
    cfg = _cfg(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = np.asarray([float(lr_at(s, 110, cfg)) for s in range(110)])
    np.testing.assert_allclose(lrs[[0, 9]], [0.1, 1.0], rtol=1e-6)
    assert np.all(np.diff(lrs[10:]) <= 1e-7) and abs(lrs[-1] - 0.1) < 1e-3


@pytest.mark.slow
def test_training_learns_and_resume_is_exact(tmp_path):
    streams = _streams()
    held = {"a": streams["a"][:400], "b": streams["b"][:400]}
    p_full, _, summ = train(tmp_path / "full", streams, held, SHAPE, _cfg(), (1,), 0, log=lambda m: None)
    hist = [h for h in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines() if "heldout" in h]
    assert summ["steps"] == 40 and len(hist) == 2
    assert summ["final_heldout"]["a"] < 1.0                  # the cycle is learnt (uniform would be ln 64 = 4.16)
    _, _, part = train(tmp_path / "split", streams, held, SHAPE, _cfg(), (1,), 0, log=lambda m: None, stop_at_step=20)
    assert part["steps"] == 20 and part["stop_reason"] == "interrupted"
    p_resumed, _, _ = train(tmp_path / "split", streams, held, SHAPE, _cfg(), (1,), 0, log=lambda m: None)
    a, b = traverse_util.flatten_dict(p_full), traverse_util.flatten_dict(p_resumed)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
