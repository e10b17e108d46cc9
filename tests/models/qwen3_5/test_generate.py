"""Qwen3.5 generation: KV cache on full-attention layers, conv + recurrent state on Gated DeltaNet layers.
Greedy equals transformers' generate on left-padded prompts; prefill + decode equals one long forward."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.lm import load_model, pad_batch
from tests.models.qwen3_5.hf_reference import assert_close, build_hf

PROMPTS = [[5, 17, 99, 3, 42, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19], [11, 2], [64, 65, 66, 67]]
LAYER_TYPES = ["linear_attention", "full_attention", "linear_attention"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen35")
    return {kind: build_hf(tmp, name=kind, moe=(kind == "moe"), seed=7, num_hidden_layers=3, layer_types=LAYER_TYPES)
            for kind in ("dense", "moe")}


def hf_greedy(model, ids, mask, max_new_tokens, edit=None):
    handle = None
    if edit is not None:
        module, fn = edit
        handle = module.register_forward_hook(
            lambda m, a, out: (fn(out[0]),) + tuple(out[1:]) if isinstance(out, tuple) else fn(out))
    try:
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                                 max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, pad_token_id=0,
                                 eos_token_id=None)
    finally:
        if handle is not None:
            handle.remove()
    return out[:, ids.shape[1]:].numpy()


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_greedy_equals_transformers_generate_with_left_padding(models, kind):
    hf_model, path = models[kind]
    lm = load_model(path)
    ids, mask = pad_batch(PROMPTS, pad_id=0, side="left")
    got, lengths = lm.generate_tokens(ids, mask, max_new_tokens=10, stop_ids=())
    assert got.shape == (3, 10) and lengths.tolist() == [10, 10, 10]
    np.testing.assert_array_equal(got, hf_greedy(hf_model, ids, mask, 10))


def test_prefill_then_decode_equals_one_long_forward(models):
    """66 prompt tokens (two delta-rule chunks) through the cache, then 4 single-token steps (recurrent rule)."""
    _, path = models["dense"]
    lm = load_model(path)
    ids = np.random.RandomState(0).randint(0, 128, (2, 70)).astype(np.int32)
    full = np.asarray(lm.logits(ids))

    @jax.jit
    def step(cache, x, mask, index):
        positions = index + jnp.broadcast_to(jnp.arange(x.shape[1], dtype=jnp.int32), x.shape)
        logits, state = lm.module.apply({"params": lm.params, "cache": cache}, x, mask, positions, cache_index=index,
                                        mutable=["cache"])
        return logits, state["cache"]

    mask = jnp.zeros((2, 70), jnp.int32).at[:, :66].set(1)
    logits, cache = step(lm.module.init_cache(2, 70), jnp.asarray(ids[:, :66]), mask, 0)
    steps = [np.asarray(logits)]
    for t in range(66, 70):
        mask = mask.at[:, t].set(1)
        logits, cache = step(cache, jnp.asarray(ids[:, t:t + 1]), mask, t)
        steps.append(np.asarray(logits))
    assert_close(np.concatenate(steps, axis=1), full, rtol=1e-5)


def test_generated_tokens_are_the_argmax_of_the_full_forward(models):
    _, path = models["moe"]
    lm = load_model(path)
    ids, mask = pad_batch(PROMPTS, pad_id=0, side="left")
    got, _ = lm.generate_tokens(ids, mask, max_new_tokens=6, stop_ids=())
    seq = np.concatenate([ids, got], axis=1)
    logits = np.asarray(lm.logits(seq, attention_mask=np.concatenate([mask, np.ones_like(got)], axis=1)))
    P = ids.shape[1]
    np.testing.assert_array_equal(logits[:, P - 1:P + 5].argmax(-1), got)
    with pytest.raises(UserError, match="left-padded"):
        lm.generate_tokens(*pad_batch(PROMPTS, pad_id=0, side="right"))


@pytest.mark.slow
@pytest.mark.parametrize("hook", ["layers.0.linear_attn", "layers.1.self_attn", "layers.2.mlp"])
def test_interventions_apply_at_every_generated_token(models, hook):
    hf_model, path = models["dense"]
    lm = load_model(path)
    ids, mask = pad_batch(PROMPTS, pad_id=0, side="left")
    vec = 3.0 * np.random.RandomState(0).randn(64).astype(np.float32)
    plain, _ = lm.generate_tokens(ids, mask, max_new_tokens=8, stop_ids=())
    steered, _ = lm.generate_tokens(ids, mask, max_new_tokens=8, stop_ids=(), interventions={hook: lambda a: a + vec})
    assert (steered != plain).any()
    layer, site = int(hook.split(".")[1]), hook.split(".")[2]
    module = getattr(hf_model.model.layers[layer], site)
    np.testing.assert_array_equal(steered, hf_greedy(hf_model, ids, mask, 8, edit=(module,
                                                                                  lambda t: t + torch.tensor(vec))))
