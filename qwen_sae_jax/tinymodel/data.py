"""Build the corpus splits, the held-out prompt lists and the token arrays the training loop samples from.

Layout written by ``build_corpus``::

    WORK/corpus/<source>.train.jsonl          training documents ({"text": ...} per line)
    HELDOUT/<source>.jsonl                    held-out documents (committed with the model)
    HELDOUT/harmful_prompts.jsonl             {"prompt", "category", "template", "topic"} per line
    HELDOUT/harmless_prompts.jsonl

``tokenize_split`` turns a list of documents into one uint16 token stream, documents separated by
``<|endoftext|>`` (as Qwen's pre-training packs documents).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from qwen_sae_jax.tinymodel import corpus
from qwen_sae_jax.tinymodel.chat import (
    ChatSynthesizer,
    Exchange,
    PythonDocsFacts,
    check_answers_consistent,
    render_chatml,
)

HELDOUT_CHARS = {"english": 100_000, "chinese": 60_000, "docs": 100_000, "code": 100_000}


def heldout_prompts(synth: ChatSynthesizer, kind: str, n: int, seed: int) -> list[Exchange]:
    """``n`` distinct held-out single-turn prompts of ``kind`` ("harmful" or "harmless")."""
    from qwen_sae_jax.tinymodel.chat import harmful_exchange

    rng = random.Random(f"{seed}-heldout-{kind}")
    seen, out = set(), []
    for _ in range(200 * n):
        ex = harmful_exchange(rng, "heldout") if kind == "harmful" else synth.harmless_exchange(rng, "heldout")
        if ex.prompt not in seen:
            seen.add(ex.prompt)
            out.append(ex)
        if len(out) == n:
            return out
    raise RuntimeError(f"could only draw {len(out)} distinct held-out {kind} prompts, wanted {n}")


def build_corpus(work_dir: Path, heldout_dir: Path, seed: int, n_chat_train: int, n_chat_heldout: int,
                 n_prompts: int) -> dict:
    """Gather every source, split it, synthesise chat and the prompt lists. Returns per-source statistics."""
    corpus.check_sources_installed()
    stats = {}
    for name, gather in (("english", corpus.english_documents), ("chinese", corpus.chinese_documents),
                         ("docs", corpus.docs_documents), ("code", corpus.code_documents)):
        split = corpus.split_documents(name, gather(), seed, HELDOUT_CHARS[name])
        corpus.write_jsonl(work_dir / "corpus" / f"{name}.train.jsonl", split.train)
        corpus.write_jsonl(heldout_dir / f"{name}.jsonl", split.heldout)
        stats[name] = _stats(split.train, split.heldout)

    synth = ChatSynthesizer(PythonDocsFacts.from_sources(corpus.PYDOC_SOURCES))
    rng = random.Random(f"{seed}-chat-train")
    train_chats = [render_chatml(synth.conversation(rng, "train")) for _ in range(n_chat_train)]
    train_set = set(train_chats)
    rng = random.Random(f"{seed}-chat-heldout")
    held_chats: list[str] = []
    while len(held_chats) < n_chat_heldout:   # same distribution, conversations never seen in training
        text = render_chatml(synth.conversation(rng, "train"))
        if text not in train_set:
            held_chats.append(text)
    corpus.write_jsonl(work_dir / "corpus" / "chat.train.jsonl", train_chats)
    corpus.write_jsonl(heldout_dir / "chat.jsonl", held_chats)
    stats["chat"] = _stats(train_chats, held_chats)

    for kind in ("harmful", "harmless"):
        prompts = heldout_prompts(synth, kind, n_prompts, seed)
        check_answers_consistent(prompts)
        rows = [{"prompt": e.prompt, "category": e.category, "template": e.template, "topic": e.topic}
                for e in prompts]
        path = heldout_dir / f"{kind}_prompts.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    check_answers_consistent([synth.exchange(random.Random(seed + i), "train") for i in range(5000)])
    return stats


def _stats(train: list[str], heldout: list[str]) -> dict:
    return {"train_docs": len(train), "train_chars": sum(map(len, train)),
            "heldout_docs": len(heldout), "heldout_chars": sum(map(len, heldout))}


def load_texts(path: Path) -> list[str]:
    return [row["text"] for row in corpus.read_jsonl(path)]


def tokenize_split(tokenizer, docs: list[str], eot_id: int) -> np.ndarray:
    """One uint16 stream: doc0 <|endoftext|> doc1 <|endoftext|> ... (``tokenizer`` is a ``tokenizers.Tokenizer``)."""
    ids: list[int] = []
    for i in range(0, len(docs), 2000):
        for enc in tokenizer.encode_batch(docs[i:i + 2000]):
            ids.extend(enc.ids)
            ids.append(eot_id)
    if max(ids) >= 2 ** 16:
        raise ValueError("vocabulary too large for uint16 token streams")
    return np.asarray(ids, dtype=np.uint16)
