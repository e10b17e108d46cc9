"""Tiny random Qwen3 checkpoints + a byte-level BPE tokenizer, built inside the tests (no download)."""
from __future__ import annotations

import json
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WORDS = ("the cat sat on a mat while seven quick foxes jumped over lazy dogs near the river bank "
         "def return import class for while print value index list dict 猫 狗 河 山 水").split()


def corpus(n_docs: int, seed: int = 0) -> list[str]:
    """``n_docs`` small pseudo-random documents of 5-40 words."""
    import random
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for _ in range(n_docs)]


def build_tokenizer(out_dir: str | Path | None = None):
    """A byte-level BPE (259 ids: 3 specials + 256 bytes) with a ChatML template; saved to ``out_dir``."""
    import tokenizers
    import transformers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=16, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["x"], trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                pad_token="<|endoftext|>", additional_special_tokens=SPECIALS[1:])
    fast.chat_template = CHAT_TEMPLATE
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def build_checkpoint(out_dir: str | Path, layers: int = 2, hidden: int = 64, seed: int = 0) -> str:
    """A random HF Qwen3 (``layers`` x ``hidden``, vocab 272) plus the tokenizer, saved to ``out_dir``."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.Qwen3Config(
        vocab_size=272, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=512,
        tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    model = transformers.Qwen3ForCausalLM(config).eval()
    model.save_pretrained(str(out_dir))
    build_tokenizer(out_dir)
    return str(out_dir)


def write_jsonl(path: str | Path, docs: list[str], column: str = "text") -> str:
    Path(path).write_text("".join(json.dumps({column: d}) + "\n" for d in docs))
    return str(path)
