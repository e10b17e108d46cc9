"""The embedded default model ``tiny`` (``qwen_sae_jax/assets/tiny-qwen3``): its files, held-out data, and
the code that rebuilds it (``launch/build_tiny_model.py`` drives corpus -> tokenizer -> train -> export -> quality).
The same code builds the hybrid ``tiny-qwen3.5`` (``--family qwen3_5``, ``assets/tiny-qwen3.5``), whose tokenizer
and held-out files are byte-identical copies of tiny's.

Readers for the committed held-out data, used by tests and case studies::

    from qwen_sae_jax.tinymodel import TINY_MODEL_DIR, heldout_texts, heldout_prompts
    heldout_texts("chinese")           # list[str], documents never trained on
    heldout_prompts("harmful")         # list[str], prompts whose templates and topics never appear in training
"""
from __future__ import annotations

import json
from pathlib import Path

from qwen_sae_jax.errors import UserError, did_you_mean

TINY_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-qwen3"
HELDOUT_DIR = TINY_MODEL_DIR / "heldout"
HELDOUT_SOURCES = ("english", "chinese", "docs", "code", "chat")
PROMPT_KINDS = ("harmful", "harmless")


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def heldout_texts(source: str) -> list[str]:
    """Held-out documents of one corpus source (english, chinese, docs, code, chat)."""
    if source not in HELDOUT_SOURCES:
        raise UserError(f"unknown held-out source {source!r}{did_you_mean(source, HELDOUT_SOURCES)}; "
                        f"valid: {', '.join(HELDOUT_SOURCES)}")
    return [row["text"] for row in _read_jsonl(HELDOUT_DIR / f"{source}.jsonl")]


def heldout_prompt_records(kind: str) -> list[dict]:
    """Held-out prompts with their provenance: ``{"prompt", "category", "template", "topic"}``."""
    if kind not in PROMPT_KINDS:
        raise UserError(f"unknown prompt kind {kind!r}{did_you_mean(kind, PROMPT_KINDS)}; "
                        f"valid: {', '.join(PROMPT_KINDS)}")
    return _read_jsonl(HELDOUT_DIR / f"{kind}_prompts.jsonl")


def heldout_prompts(kind: str) -> list[str]:
    """Held-out user prompts, ``kind`` in {"harmful", "harmless"}."""
    return [row["prompt"] for row in heldout_prompt_records(kind)]
