"""Text -> packed token batches: packing, seeded shuffling, per-process rows, exact iterator state."""
import json

import numpy as np
import pytest

from qwen_sae_jax.data.tokens import DataConfig, TokenBatches, make_tokenize, special_token_ids
from qwen_sae_jax.errors import UserError
from tests.train.tiny_checkpoint import build_tokenizer, corpus


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _cfg(**kw):
    return DataConfig(**{"files": ["unused"], "ctx_len": 16, "batch_size": 4, "seed": 3, **kw})


def test_rows_are_packed_documents_with_eos(tokenizer):
    docs = corpus(12)
    cfg = _cfg()
    it = TokenBatches(tokenizer, cfg, docs=docs)
    batches = np.stack([next(it) for _ in range(30)])          # [steps, rows, ctx]
    assert batches.shape == (30, 4, 16) and batches.dtype == np.int32
    tokenize = make_tokenize(tokenizer, cfg)
    eos = tokenizer.eos_token_id
    for r in range(4):
        stream = batches[:, r].reshape(-1)
        # the row's stream is its own documents (docs[r::4]), each followed by EOS, in a shuffled order
        pieces = np.split(stream, np.flatnonzero(stream == eos) + 1)[:-1]
        own = {tuple(tokenize(d)) for d in docs[r::4]}
        assert len(pieces) >= 3 and all(tuple(p) in own for p in pieces)
        first_epoch = [tuple(p) for p in pieces[:3]]
        assert sorted(first_epoch) == sorted(own)              # every document once per epoch


def test_seed_changes_order_and_is_reproducible(tokenizer):
    docs = corpus(40)
    a = [next(TokenBatches(tokenizer, _cfg(seed=1), docs=docs)) for _ in range(1)]
    b = [next(TokenBatches(tokenizer, _cfg(seed=1), docs=docs)) for _ in range(1)]
    c = [next(TokenBatches(tokenizer, _cfg(seed=2), docs=docs)) for _ in range(1)]
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_processes_together_equal_one_process(tokenizer):
    docs = corpus(30)
    single = TokenBatches(tokenizer, _cfg(), docs=docs)
    halves = [TokenBatches(tokenizer, _cfg(), process_index=p, process_count=2, docs=docs) for p in range(2)]
    assert halves[1].rows == range(2, 4)
    for _ in range(5):
        np.testing.assert_array_equal(next(single), np.concatenate([next(h) for h in halves]))
    with pytest.raises(UserError, match="divisible by the number of processes"):
        TokenBatches(tokenizer, _cfg(batch_size=3), process_index=0, process_count=2, docs=docs)


@pytest.mark.parametrize("skip", [0, 1, 7, 13])
def test_state_restores_the_exact_stream(tokenizer, skip):
    docs = corpus(9, seed=5)        # few docs: crosses epoch boundaries and document middles
    it = TokenBatches(tokenizer, _cfg(ctx_len=7, batch_size=3), docs=docs)
    for _ in range(skip):
        next(it)
    state = json.loads(json.dumps(it.get_state()))            # JSON round trip, as in a checkpoint
    expected = [next(it) for _ in range(6)]
    fresh = TokenBatches(tokenizer, _cfg(ctx_len=7, batch_size=3), docs=docs)
    fresh.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(fresh), want)


def test_bos_policy_and_bad_input(tokenizer):
    docs = corpus(8)
    with pytest.raises(UserError, match="no BOS token"):
        TokenBatches(tokenizer, _cfg(prepend_bos=True), docs=docs)
    with pytest.raises(UserError, match="has 8 document.* data.batch_size=16"):
        TokenBatches(tokenizer, _cfg(batch_size=16), docs=docs)
    tok = build_tokenizer()
    tok.bos_token = "<|im_start|>"
    batch = next(TokenBatches(tok, _cfg(prepend_bos=True), docs=docs))
    assert (batch[:, 0] == tok.bos_token_id).all() and (batch[:, 1:] != tok.bos_token_id).all()
    with pytest.raises(UserError, match="must be >= 2"):
        _cfg(ctx_len=1)


def test_chat_documents_use_the_template(tokenizer):
    chats = [[{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}] for i in range(4)]
    it = TokenBatches(tokenizer, _cfg(chat=True, batch_size=2, ctx_len=32), docs=chats)
    text = tokenizer.decode(next(it)[0])
    assert text.startswith("<|im_start|>user\nhi ") and "<|im_end|>" in text
    ids = special_token_ids(tokenizer)
    assert set(tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])) <= set(ids)
    with pytest.raises(Exception, match="not a list of"):
        next(TokenBatches(tokenizer, _cfg(chat=True, batch_size=2), docs=["plain", "text"]))
