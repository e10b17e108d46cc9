"""Chat conversations -> token ids and the reply mask, both derived from the model's own chat template.

A conversation is a list of ``{"role", "content"}`` messages. It is rendered once with
``tokenizer.apply_chat_template`` and tokenised with character offsets. The *reply* of assistant message ``i``
is the text the template adds when message ``i`` is appended after the generation prompt::

    prefix_i = render(messages[:i], add_generation_prompt=True)  # ... <|im_start|>assistant\\n
    upto_i   = render(messages[:i + 1])                          # ... <|im_start|>assistant\\n{content}<|im_end|>\\n
    reply_i  = characters [len(prefix_i), len(upto_i.rstrip())) #                        {content}<|im_end|>

so it covers the assistant's content and the template's end-of-turn marker (what the model must emit to stop),
not the whitespace the template writes after that marker. A token belongs to the reply when its first character
does. This holds for any template whose renders of growing prefixes extend each other (ChatML, Qwen3); one that
rewrites earlier turns (e.g. drops past reasoning) is refused with the turn it fails on.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import numpy as np

from qwen_sae_jax.errors import UserError

_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff]")
_CHATML_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n?", re.S)
_LATIN = re.compile("[A-Za-z]")


@dataclasses.dataclass
class Example:
    """One tokenised conversation."""

    ids: np.ndarray       # [n] int32 token ids of the whole rendered conversation
    reply: np.ndarray     # [n] bool: the token belongs to an assistant reply
    reply_text: str       # the assistant contents joined by newlines (for language detection)


def _render(tokenizer: Any, messages: Sequence[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def parse_chatml(text: str, where: str = "conversation") -> list[dict]:
    """Messages of a ChatML transcript (``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per turn, nothing else)."""
    turns = list(_CHATML_TURN.finditer(text))
    if not turns or "".join(t.group(0) for t in turns).strip() != text.strip():
        raise UserError(f"{where}: a text conversation must be a ChatML transcript "
                        "(<|im_start|>role\\ncontent<|im_end|> per turn); or give a list of {role, content} messages")
    return [{"role": t.group(1), "content": t.group(2)} for t in turns]


def _check_messages(messages: Any, where: str) -> None:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise UserError(f"{where}: a conversation must be a non-empty list of {{role, content}} messages, "
                        f"got {type(messages).__name__}")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise UserError(f"{where}: every message needs string 'role' and 'content', got {m!r:.80}")


def reply_spans(tokenizer: Any, messages: Sequence[dict], where: str = "conversation") -> tuple[str, list[tuple]]:
    """``(rendered text, [(start, end) character span of each assistant reply])`` (module docstring).
    ``messages`` may also be a ChatML transcript string (`parse_chatml`)."""
    if isinstance(messages, str):
        messages = parse_chatml(messages, where)
    _check_messages(messages, where)
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the model's tokenizer has no chat_template: SFT renders conversations with it")
    full = _render(tokenizer, messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], True)
        upto = _render(tokenizer, messages[:i + 1], False)
        if not (upto.startswith(prefix) and full.startswith(upto)):
            raise UserError(f"{where}: the chat template does not render message {i} as an extension of the "
                            "turns before it, so its reply tokens cannot be located")
        end = len(upto.rstrip())
        if end > len(prefix):
            spans.append((len(prefix), end))
    return full, spans


def tokenize_conversation(tokenizer: Any, messages: Sequence[dict], where: str = "conversation") -> Example:
    """Token ids of the rendered conversation and the mask of its reply tokens."""
    if isinstance(messages, str):
        messages = parse_chatml(messages, where)
    text, spans = reply_spans(tokenizer, messages, where)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    starts = np.asarray([s for s, _ in enc["offset_mapping"]], np.int64)   # [n] first character of each token
    reply = np.zeros(starts.shape, bool)
    for lo, hi in spans:
        reply |= (starts >= lo) & (starts < hi)
    reply_text = "\n".join(m["content"] for m in messages if m["role"] == "assistant")
    return Example(np.asarray(enc["input_ids"], np.int32), reply, reply_text)


def detect_language(text: str) -> str:
    """``"zh"`` when CJK ideographs are at least half of the text's CJK + Latin letters, else ``"en"``."""
    cjk, latin = len(_CJK.findall(text)), len(_LATIN.findall(text))
    return "zh" if cjk and cjk >= latin else "en"
