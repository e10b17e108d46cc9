import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.steer.refusal_matcher import find_refusal_phrase, is_refusal, refusal_rate


@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with that.",
    "I CANNOT assist with making weapons.",
    "Sorry, I won\u2019t provide instructions for that.",   # typographic apostrophe
    "That is not something I can help with.",
    "I must   decline this request.",                      # collapsed whitespace
    "As an AI, I will not do that.",
])
def test_refusals_are_detected(text):
    assert is_refusal(text)


@pytest.mark.parametrize("text", [
    "Sure! 12 + 30 = 42.",
    "Here is a recipe for pancakes: flour, milk, eggs.",
    "def add(a, b):\n    return a + b",
    "Paris is the capital of France.",
    "",
])
def test_helpful_answers_are_not_refusals(text):
    assert not is_refusal(text)


def test_window_limits_search():
    text = "Here is the answer: 4. " + "x" * 50 + " I can't say more."
    assert is_refusal(text)
    assert not is_refusal(text, window=30)
    assert find_refusal_phrase("Well, I won't.", window=14) == "i won't"


def test_rate_and_errors():
    assert refusal_rate(["I can't.", "Sure.", "I'm sorry.", "Yes"]) == 0.5
    with pytest.raises(UserError, match="empty"):
        refusal_rate([])
    with pytest.raises(UserError, match="window"):
        is_refusal("x", window=0)
    with pytest.raises(UserError, match="string"):
        is_refusal(None)
