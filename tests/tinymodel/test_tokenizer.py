import json

import pytest

from qwen_sae_jax.tinymodel import TINY_MODEL_DIR
from qwen_sae_jax.tinymodel.chat import render_chatml
from qwen_sae_jax.tinymodel.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, THINK_TOKENS, save_tokenizer, train_bpe

TEXTS = ["The quick brown fox jumps over the lazy dog. 12345", "def add(a, b):\n    return a + b\n",
         "床前明月光，疑是地上霜。", "Hello world, hello tokenizer!"] * 20


def test_train_bpe_roundtrip_and_special_tokens(tmp_path):
    tok = train_bpe(TEXTS, vocab_size=300)
    assert tok.get_vocab_size() == 300
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS + THINK_TOKENS}
    assert sorted(ids.values()) == list(range(295, 300))          # right after the BPE vocabulary
    text = "<|im_start|>user\n你好, x = 42<|im_end|>\n"
    enc = tok.encode(text)
    assert enc.ids[0] == ids["<|im_start|>"] and ids["<|im_end|>"] in enc.ids
    assert tok.decode(enc.ids, skip_special_tokens=False) == text
    assert [tok.decode([i]) for i in tok.encode("2024").ids] == ["2", "0", "2", "4"]   # digits split
    save_tokenizer(tok, tmp_path, model_max_length=256)
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert hf.eos_token == "<|im_end|>" and hf.pad_token == "<|endoftext|>"


def test_committed_tokenizer_loads_with_specials_and_chat_template():
    from transformers import AutoTokenizer
    cfg = json.loads((TINY_MODEL_DIR / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == CHAT_TEMPLATE
    assert not (TINY_MODEL_DIR / "chat_template.jinja").exists()
    tok = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)
    for t in SPECIAL_TOKENS + THINK_TOKENS:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert ids == [tok.convert_tokens_to_ids(t)], t
    assert tok.eos_token == "<|im_end|>"
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]
    rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert rendered == render_chatml(msgs, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert tok("hello")["input_ids"] == tok("hello", add_special_tokens=True)["input_ids"]   # no BOS added


@pytest.mark.parametrize("text", ["How do I bake bread?", "你好，世界", "for i in range(10):\n    print(i)"])
def test_committed_tokenizer_roundtrip(text):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)
    assert tok.decode(tok(text)["input_ids"]) == text
