"""The reply mask comes from the chat template and covers exactly the assistant replies (content + end-of-turn
marker), checked against the replies tokenised on their own."""
import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.posttrain.chat import detect_language, parse_chatml, tokenize_conversation

TWO_TURNS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"},
             {"role": "assistant", "content": "hello, cat"}, {"role": "user", "content": "and?"},
             {"role": "assistant", "content": "猫 河 水"}]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    from qwen_sae_jax.lm import TINY_DIR
    return AutoTokenizer.from_pretrained(TINY_DIR)


@pytest.mark.parametrize("which", ["tokenizer", "tiny_tokenizer"])
def test_mask_is_exactly_the_replies(which, request):
    tok = request.getfixturevalue(which)
    ex = tokenize_conversation(tok, TWO_TURNS)
    replies = [m["content"] + "<|im_end|>" for m in TWO_TURNS if m["role"] == "assistant"]
    # the masked tokens, decoded, are the two replies with their end-of-turn markers and nothing else
    assert tok.decode(ex.ids[ex.reply].tolist(), skip_special_tokens=False) == "".join(replies)
    assert ex.reply.sum() == sum(len(tok(r, add_special_tokens=False)["input_ids"]) for r in replies)
    # two contiguous runs, each right after "<|im_start|>assistant\n"
    runs = [i for i in range(len(ex.reply)) if ex.reply[i] and (i == 0 or not ex.reply[i - 1])]
    assert len(runs) == 2
    for start in runs:
        assert tok.decode(ex.ids[:start].tolist()).endswith("<|im_start|>assistant\n")
    assert tok.decode(ex.ids.tolist()) == tok.apply_chat_template(TWO_TURNS, tokenize=False)


def test_template_that_rewrites_earlier_turns_is_refused(tokenizer):
    tok = tokenizer
    old = tok.chat_template
    # renders only the last message: prefixes do not extend each other
    tok.chat_template = "{{ messages[-1]['content'] }}{% if add_generation_prompt %}>>{% endif %}"
    try:
        with pytest.raises(UserError, match="message 2 as an extension"):
            tokenize_conversation(tok, TWO_TURNS[:3])
    finally:
        tok.chat_template = old


@pytest.mark.parametrize("bad, match", [([], "non-empty list"), ("hello", "must be a ChatML transcript"),
                                        ([{"role": "user"}], "string 'role' and 'content'")])
def test_bad_conversations(tokenizer, bad, match):
    with pytest.raises(UserError, match=match):
        tokenize_conversation(tokenizer, bad)


def test_detect_language():
    assert detect_language("猫 狗 河 and") == "zh"      # 3 ideographs vs 3 Latin letters
    assert detect_language("the cat 猫") == "en"
    assert detect_language("123") == "en"


def test_chatml_transcripts_are_conversations(tokenizer):
    text = tokenizer.apply_chat_template(TWO_TURNS, tokenize=False)
    assert parse_chatml(text) == TWO_TURNS
    ex, want = tokenize_conversation(tokenizer, text), tokenize_conversation(tokenizer, TWO_TURNS)
    assert (ex.ids == want.ids).all() and (ex.reply == want.reply).all()
    with pytest.raises(UserError, match="must be a ChatML transcript"):
        parse_chatml("free text <|im_start|>user\nhi<|im_end|>")
