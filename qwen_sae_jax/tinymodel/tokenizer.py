"""Byte-level BPE tokenizer for the tiny model, trained with HF ``tokenizers``, in Qwen3's conventions.

* Pre-tokenisation: Qwen2/Qwen3's split regex (digits one at a time, letters with a leading space or
  punctuation mark, ...) followed by GPT-2 byte-level mapping, so every byte string is encodable.
* Special tokens, at the ids right after the BPE vocabulary and in Qwen3's order: ``<|endoftext|>``
  (document separator and padding), ``<|im_start|>``, ``<|im_end|>`` (end of an assistant turn: the
  generation stop token), ``<think>``, ``</think>`` (added but not special, as in Qwen3).
* No BOS is added (as in Qwen3). The ChatML chat template (``CHAT_TEMPLATE``) renders
  ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message and, with ``add_generation_prompt``,
  ``<|im_start|>assistant\\n``; ``tinymodel.chat.render_chatml`` writes the same strings.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
THINK_TOKENS = ("<think>", "</think>")
QWEN_SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                    r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train the byte-level BPE on ``texts``; ``vocab_size`` counts the BPE tokens and the 5 added tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    n_added = len(SPECIAL_TOKENS) + len(THINK_TOKENS)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - n_added, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def tokenizer_config(model_max_length: int) -> dict:
    """The ``tokenizer_config.json`` contents (loadable by ``transformers.AutoTokenizer``)."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": model_max_length,
        "split_special_tokens": False,
        "chat_template": CHAT_TEMPLATE,
    }


def save_tokenizer(tok: Tokenizer, out_dir: Path, model_max_length: int) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` (with the chat template) and ``special_tokens_map.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(model_max_length), indent=2) + "\n")
    special_map = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                   "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")


def special_token_ids(tok: Tokenizer) -> dict[str, int]:
    """Id of every special and thinking token (the tokenizer built here has them all)."""
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS + THINK_TOKENS}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"the tokenizer lacks the special tokens {missing}")
    return {t: i for t, i in ids.items() if i is not None}


def batched(texts: list[str], size: int = 1000) -> Iterator[list[str]]:
    for i in range(0, len(texts), size):
        yield texts[i:i + size]
