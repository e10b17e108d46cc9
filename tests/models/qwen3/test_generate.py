"""KV-cache generation: greedy equals transformers' generate, equals full recomputation, stops, samples, intervenes."""
import jax
import numpy as np
import pytest
import torch

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.lm import load_model, pad_batch

PROMPTS = [[5, 17, 99, 3, 42, 7], [11, 2], [64, 65, 66, 67]]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from tests.models.qwen3.hf_reference import build_hf

    tmp = tmp_path_factory.mktemp("gen")
    return {kind: build_hf(tmp, name=kind, moe=(kind == "moe"), seed=7) for kind in ("dense", "moe")}


def hf_greedy(model, ids, mask, max_new_tokens, edit=None):
    handle = None
    if edit is not None:
        layer, fn = edit
        handle = model.model.layers[layer].register_forward_hook(lambda m, a, out: fn(out))
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


def test_cache_equals_full_recompute_and_loop_is_compiled(models):
    _, path = models["dense"]
    lm = load_model(path)
    ids, mask = pad_batch(PROMPTS, pad_id=0, side="left")
    got, _ = lm.generate_tokens(ids, mask, max_new_tokens=6, stop_ids=())
    # causal model: the full forward over prompt + generated tokens at position P-1+t is the recomputation of step t
    seq = np.concatenate([ids, got], axis=1)
    full_mask = np.concatenate([mask, np.ones_like(got)], axis=1)
    logits = np.asarray(lm.logits(seq, attention_mask=full_mask))
    P = ids.shape[1]
    np.testing.assert_array_equal(logits[:, P - 1:P + 5].argmax(-1), got)
    # one compiled program with a while loop, not a Python loop re-tracing per token
    programs = [k for k in lm._compiled if k[0] == "generate"]
    assert len(programs) == 1
    from qwen_sae_jax.models.generate import generate

    jaxpr = jax.make_jaxpr(lambda p, x, m: generate(lm.module, p, x, m, max_new_tokens=6, stop_ids=(), pad_id=0))(
        lm.params, ids, mask)
    assert "while" in str(jaxpr)


def test_stops_on_eos_per_row(models):
    _, path = models["dense"]
    lm = load_model(path)
    ids, mask = pad_batch(PROMPTS, pad_id=0, side="left")
    free, _ = lm.generate_tokens(ids, mask, max_new_tokens=8, stop_ids=())
    eos = int(free[0, 2])
    first_hit = [int(np.argmax(row == eos)) if (row == eos).any() else None for row in free]
    got, lengths = lm.generate_tokens(ids, mask, max_new_tokens=8, stop_ids=(eos,))
    for b, hit in enumerate(first_hit):
        n = 8 if hit is None else hit + 1
        assert lengths[b] == n
        np.testing.assert_array_equal(got[b, :n], free[b, :n])
        assert (got[b, n:] == lm.pad_token_id).all()


def test_sampling_is_seeded_and_top_p_limits_the_support(models):
    _, path = models["dense"]
    lm = load_model(path)
    ids, mask = pad_batch(PROMPTS, pad_id=0, side="left")
    a, _ = lm.generate_tokens(ids, mask, max_new_tokens=12, temperature=1.0, seed=1, stop_ids=())
    b, _ = lm.generate_tokens(ids, mask, max_new_tokens=12, temperature=1.0, seed=1, stop_ids=())
    c, _ = lm.generate_tokens(ids, mask, max_new_tokens=12, temperature=1.0, seed=2, stop_ids=())
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    greedy, _ = lm.generate_tokens(ids, mask, max_new_tokens=12, stop_ids=())
    nucleus, _ = lm.generate_tokens(ids, mask, max_new_tokens=12, temperature=1.0, top_p=1e-6, seed=3, stop_ids=())
    np.testing.assert_array_equal(nucleus, greedy)
    with pytest.raises(UserError, match="top_p"):
        lm.generate_tokens(ids, mask, top_p=0.0)
    with pytest.raises(UserError, match="left-padded"):
        lm.generate_tokens(*pad_batch(PROMPTS, pad_id=0, side="right"))


def test_interventions_apply_at_every_generated_token(models):
    hf_model, path = models["dense"]
    lm = load_model(path)
    ids, mask = pad_batch(PROMPTS, pad_id=0, side="left")
    vec = 3.0 * np.random.RandomState(0).randn(32).astype(np.float32)
    plain, _ = lm.generate_tokens(ids, mask, max_new_tokens=8, stop_ids=())
    steered, _ = lm.generate_tokens(ids, mask, max_new_tokens=8, stop_ids=(),
                                    interventions={"layers.0": lambda a: a + vec})
    assert (steered != plain).any()
    want = hf_greedy(hf_model, ids, mask, 8, edit=(0, lambda out: out + torch.tensor(vec)))
    np.testing.assert_array_equal(steered, want)


def _write_tokenizer(path):
    """A small character-level BPE tokenizer with Qwen-style special tokens and a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    text = ["the cat sat on the mat and the dog ran to the park", "user assistant hello how are you"] * 5
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=100, special_tokens=specials))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    fast.save_pretrained(path)
    return fast


def test_text_generate_with_chat_template_and_stop_tokens(models, tmp_path):
    import shutil

    _, path = models["dense"]
    target = tmp_path / "with_tok"
    shutil.copytree(path, target)
    tok = _write_tokenizer(target)
    lm = load_model(str(target))
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end in lm.stop_token_ids()
    ids, mask = lm.tokenize(["the cat", "hello how are you"], padding_side="left", chat=True)
    rendered = tok.apply_chat_template([{"role": "user", "content": "the cat"}], tokenize=False,
                                       add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert ids[0][mask[0] == 1].tolist() == tok(rendered, add_special_tokens=False)["input_ids"]
    texts = lm.generate(["the cat", "hello how are you"], max_new_tokens=5, chat=True)
    assert isinstance(texts, list) and len(texts) == 2 and all(isinstance(t, str) for t in texts)
    out, lengths = lm.generate_tokens(ids, mask, max_new_tokens=5)
    assert texts[0] == tok.decode(out[0, :lengths[0]].tolist(), skip_special_tokens=True)
    single = lm.generate("the cat", max_new_tokens=5, chat=False)
    assert isinstance(single, str)
    lm.tokenizer.chat_template = None
    with pytest.raises(UserError, match="no chat_template"):
        lm.generate("hi", chat=True)
