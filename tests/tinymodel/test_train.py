import numpy as np
import pytest
from flax import traverse_util

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.models.qwen3 import Qwen3Config
from qwen_sae_jax.models.qwen3.params import init_params
from qwen_sae_jax.models.qwen3_5.config import Qwen3_5Config
from qwen_sae_jax.tinymodel.train import (
    ChatTokenIds,
    ModelShape,
    TrainConfig,
    WindowSampler,
    hybrid_layer_types,
    lr_at,
    reply_mask,
    train,
)

SHAPE = ModelShape(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                   num_key_value_heads=1, head_dim=16, vocab_size=64, max_position_embeddings=64)
HYBRID = ModelShape(family="qwen3_5", num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=16, vocab_size=64, max_position_embeddings=64,
                    layer_types=hybrid_layer_types(2, 2), partial_rotary_factor=0.5, linear_num_key_heads=1,
                    linear_num_value_heads=2, linear_key_head_dim=8, linear_value_head_dim=8)


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
    steps = np.arange(110)
    # linear warm-up to step 9, then cosine to 0.1 x peak: every step, since a linear decay agrees with the
    # cosine at the start, middle and end of the decay
    cosine = 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * np.clip((steps - 10) / 100, 0, 1)))
    np.testing.assert_allclose(lrs, np.where(steps < 10, (steps + 1) / 10, cosine), rtol=1e-5)


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


def test_base_params_start_from_trained_weights(tmp_path):
    """The instruction-tuning stage continues a run: with lr 0 the base weights come back unchanged,
    and they are not the fresh init the same seed would give."""
    streams = _streams()
    held = {"a": streams["a"][:400], "b": streams["b"][:400]}
    fresh = init_params(SHAPE.config((1,), 0), seed=1)            # what the run would start from
    base = {k: v + 0.5 for k, v in traverse_util.flatten_dict(fresh).items()}
    base = traverse_util.unflatten_dict(base)
    out, _, _ = train(tmp_path / "cont", streams, held, SHAPE, _cfg(max_steps=3, lr=0.0), (1,), 0,
                      log=lambda m: None, base_params=base)
    a, b = traverse_util.flatten_dict(base), traverse_util.flatten_dict(out)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_reply_mask_marks_assistant_replies_only():
    ids = ChatTokenIds(im_start=1, assistant=2, im_end=3)          # user role 4, newline 5, text 6..9
    #        0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16 17
    row = [7, 3, 1, 4, 5, 6, 6, 3, 1, 2, 5, 8, 9, 3, 1, 2, 5, 9]   # tail of a reply, user turn, reply, new reply
    mask = reply_mask(np.asarray([row]), ids)[0]                 # over targets row[1:]
    targets_in_reply = {t for t in range(1, len(row)) if mask[t - 1]}
    # reply tokens + its <|im_end|>; the cut-off tail at 0-1 is not
    assert targets_in_reply == {11, 12, 13, 17}
    assert mask.shape == (len(row) - 1,)


def test_reply_only_rows_learn_only_the_reply(tmp_path):
    """Reply-only rows must not learn their user turns: with both turns fixed token sequences, full-loss
    training learns the user turn while reply-only training leaves it near chance and still learns the reply."""
    import optax

    from qwen_sae_jax.models.qwen3 import Qwen3ForCausalLM
    ids = ChatTokenIds(im_start=1, assistant=2, im_end=3)
    convo = [1, 4, 5, 30, 41, 33, 57, 36, 3, 5, 1, 2, 5, 20, 21, 22, 23, 3, 5] * 300
    streams = {"chat": np.asarray(convo, np.uint16)}
    held = {"chat": streams["chat"][:400]}
    window = np.asarray([convo[:38]], np.int32)
    reply_targets = reply_mask(window, ids)[0].astype(bool)
    user_targets = np.zeros_like(reply_targets)
    user_targets[[3, 4, 5, 6, 22, 23, 24, 25]] = True            # predicting 41 33 57 36 (targets are row[1:])

    def losses(run, **kw):
        cfg = _cfg(source_weights={"chat": 1.0}, max_steps=30, **kw)
        params, config, _ = train(tmp_path / run, streams, held, SHAPE, cfg, (3,), 0, log=lambda m: None,
                                  chat_ids=ids)
        logits = Qwen3ForCausalLM(config).apply({"params": params}, window[:, :-1])
        ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, window[:, 1:]))[0]
        return ce[user_targets].mean(), ce[reply_targets].mean()

    user_full, reply_full = losses("full")
    user_reply_only, reply_reply_only = losses("reply", reply_only_sources=("chat",))
    assert user_full < 1.0 and reply_full < 1.0
    assert user_reply_only > 2.5 and reply_reply_only < 1.0, (user_reply_only, reply_reply_only)
    with pytest.raises(ValueError, match="chat token ids"):
        train(tmp_path / "x", streams, held, SHAPE, _cfg(reply_only_sources=("chat",)), (3,), 0)


def test_model_shape_builds_the_config_of_its_family():
    qwen3 = SHAPE.config((1, 2), 0)
    assert isinstance(qwen3, Qwen3Config) and qwen3.eos_token_ids == (1, 2) and qwen3.tie_word_embeddings
    hybrid = HYBRID.config((1,), 0)
    assert isinstance(hybrid, Qwen3_5Config) and not hybrid.is_moe
    assert hybrid.layer_types == ("linear_attention", "full_attention") and hybrid.rotary_dim == 8
    assert (hybrid.linear_num_key_heads, hybrid.linear_num_value_heads, hybrid.linear_key_head_dim) == (1, 2, 8)
    assert ModelShape.of_config(hybrid) == HYBRID and ModelShape.of_config(qwen3) == SHAPE
    assert hybrid_layer_types(6, 3) == ("linear_attention",) * 2 + ("full_attention",) + ("linear_attention",) * 2 \
        + ("full_attention",)


def test_model_shape_reads_its_json_form_back():
    """Checkpoints store ``asdict(shape)`` (tuples become lists in JSON); shapes saved before the family
    field existed are Qwen3."""
    import json
    from dataclasses import asdict
    assert ModelShape(**json.loads(json.dumps(asdict(HYBRID)))) == HYBRID
    old = {k: v for k, v in asdict(SHAPE).items() if k in ("num_hidden_layers", "hidden_size", "intermediate_size",
           "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings")}
    assert ModelShape(**old).family == "qwen3"


def test_unknown_family_and_missing_layer_kinds_are_clear_errors():
    with pytest.raises(UserError, match="unknown model family 'qwen4'.*valid: qwen3, qwen3_5"):
        ModelShape(family="qwen4")
    with pytest.raises(UserError, match="layer_types has 0 entries"):
        ModelShape(family="qwen3_5").config((1,), 0)
    with pytest.raises(UserError, match="full_attention_interval=0"):
        hybrid_layer_types(4, 0)


def test_hybrid_family_trains(tmp_path):
    """The loop is family-agnostic: the Qwen3.5 hybrid (one Gated DeltaNet + one attention layer) learns the cycle."""
    from qwen_sae_jax.models.qwen3_5.modeling import Qwen3_5ForCausalLM
    streams = _streams()
    held = {"a": streams["a"][:400], "b": streams["b"][:400]}
    params, config, summ = train(tmp_path / "hybrid", streams, held, HYBRID, _cfg(max_steps=30), (1,), 0,
                                 log=lambda m: None)
    assert isinstance(config, Qwen3_5Config) and summ["model_shape"]["family"] == "qwen3_5"
    assert set(params["model"]["layers_0"]) >= {"linear_attn"} and set(params["model"]["layers_1"]) >= {"self_attn"}
    assert summ["final_heldout"]["a"] < 2.0, summ["final_heldout"]          # uniform would be ln 64 = 4.16
    logits = Qwen3_5ForCausalLM(config).apply({"params": params}, np.asarray([[10, 11, 12]], np.int32))
    assert logits.shape == (1, 3, 64)
