"""Texts -> token windows for feature analysis (no packing across documents, so every window is readable).

Two shapes of input:

* a *corpus* for max-activating examples (`corpus_windows`): each document is tokenised on its own and cut
  into consecutive windows of ``ctx_len`` tokens (the last one shorter, right-padded); reading stops when
  ``max_tokens`` real tokens are collected. ``doc_index`` / ``doc_offset`` say where each window came from.
* a list of *texts* judged one by one (`text_windows`, for footprints / the classifier / redundancy): one
  window per text, truncated to ``max_len`` tokens.

Which positions count (`position_mask`): real tokens (attention mask) that are not special tokens and,
with ``exclude_first``, not the first token of a sequence (its activations are attention-sink outliers;
the trainer drops it too).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Sequence

import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.errors import UserError


@dataclasses.dataclass
class TokenWindows:
    input_ids: np.ndarray        # [S, T] int32, right-padded with pad_id
    attention_mask: np.ndarray   # [S, T] int32, 1 = token
    doc_index: np.ndarray        # [S] int32: the document (or text) each window comes from
    doc_offset: np.ndarray       # [S] int32: token offset of the window inside its document
    truncated: int = 0           # texts cut at max_len (text_windows only)

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def batches(self, batch_size: int):
        """``(start, input_ids [b, T], attention_mask [b, T])`` in order; the last batch is padded to
        ``batch_size`` rows with all-padding rows (mask 0) so every batch has one shape."""
        S, T = self.input_ids.shape
        for start in range(0, S, batch_size):
            ids = self.input_ids[start:start + batch_size]
            mask = self.attention_mask[start:start + batch_size]
            if ids.shape[0] < batch_size:
                fill = batch_size - ids.shape[0]
                ids = np.concatenate([ids, np.zeros((fill, T), np.int32)])
                mask = np.concatenate([mask, np.zeros((fill, T), np.int32)])
            yield start, ids, mask


def _require_tokenizer(tokenizer):
    if tokenizer is None:
        raise UserError("the model has no tokenizer (tokenizer.json / tokenizer_config.json), so texts cannot "
                        "be tokenised")
    return tokenizer


def _encode(tokenizer, text) -> list[int]:
    if not isinstance(text, str):
        raise UserError(f"a document is a {type(text).__name__}, not text")
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _stack(rows: list[list[int]], doc_index: list[int], doc_offset: list[int], ctx_len: int, pad_id: int,
           truncated: int = 0) -> TokenWindows:
    ids = np.full((len(rows), ctx_len), pad_id, np.int32)
    mask = np.zeros((len(rows), ctx_len), np.int32)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return TokenWindows(ids, mask, np.asarray(doc_index, np.int32), np.asarray(doc_offset, np.int32), truncated)


def corpus_windows(tokenizer, docs: Iterable[str], ctx_len: int, max_tokens: int, pad_id: int,
                   min_window: int = 2) -> TokenWindows:
    """Windows of up to ``ctx_len`` tokens cut from ``docs`` in order until ``max_tokens`` tokens are read
    (``docs`` may be any iterable; it is read only as far as needed).

    Trailing pieces shorter than ``min_window`` tokens are dropped (nothing to read in them)."""
    tokenizer = _require_tokenizer(tokenizer)
    if ctx_len < 2 or max_tokens < 1:
        raise UserError(f"ctx_len must be >= 2 and max_tokens >= 1, got {ctx_len} and {max_tokens}")
    rows, index, offset, total = [], [], [], 0
    for d, doc in enumerate(docs):
        ids = _encode(tokenizer, doc)
        for start in range(0, len(ids), ctx_len):
            piece = ids[start:start + ctx_len][:max_tokens - total]
            if len(piece) < min_window:
                break
            rows.append(piece)
            index.append(d)
            offset.append(start)
            total += len(piece)
            if total >= max_tokens:
                return _stack(rows, index, offset, ctx_len, pad_id)
    if not rows:
        raise UserError(f"the corpus holds no window of >= {min_window} tokens")
    return _stack(rows, index, offset, ctx_len, pad_id)


def text_windows(tokenizer, texts: Sequence[str], max_len: int, pad_id: int, chat: bool = False) -> TokenWindows:
    """One right-padded window per text (truncated to ``max_len`` tokens), padded to the longest text.

    With ``chat`` each text is rendered as one user turn by the tokenizer's chat template."""
    from qwen_sae_jax.lm import apply_chat_template

    tokenizer = _require_tokenizer(tokenizer)
    if not texts:
        raise UserError("no texts given")
    rows, truncated = [], 0
    for i, text in enumerate(texts):
        ids = _encode(tokenizer, apply_chat_template(tokenizer, text) if chat else text)
        if not ids:
            raise UserError(f"text {i + 1} encodes to zero tokens")
        truncated += len(ids) > max_len
        rows.append(ids[:max_len])
    width = max(len(r) for r in rows)
    return _stack(rows, list(range(len(rows))), [0] * len(rows), width, pad_id, truncated)


def position_mask(input_ids, attention_mask, special_ids=None, exclude_first: bool = True):
    """[B, T] bool (traceable): real tokens, minus special tokens, minus (``exclude_first``) each row's first
    real token."""
    real = jnp.asarray(attention_mask).astype(bool)
    keep = real
    if special_ids is not None and len(special_ids):
        keep = keep & ~jnp.isin(input_ids, jnp.asarray(special_ids, jnp.int32))
    if exclude_first:
        keep = keep & ~(real & (jnp.cumsum(real.astype(jnp.int32), axis=-1) == 1))
    return keep


def read_texts(path: str, text_column: str = "text", text_unit: str = "line") -> list[str]:
    """Texts of one file: ``.jsonl`` / ``.json`` (column ``text_column``), ``.parquet``, or plain text cut by
    ``text_unit`` ("line", "paragraph", "document"). ``tiny:`` paths point into the embedded model's folder.
    An empty or missing file is a `UserError`."""
    from qwen_sae_jax.data.text import TextSourceConfig, open_documents

    if not path.startswith("tiny:") and os.path.isdir(path):
        raise UserError(f"text file {path!r} is a folder; give one file (.jsonl, .json, .parquet or plain text)")
    if not path.startswith("tiny:") and not os.path.isfile(path):
        raise UserError(f"text file {path!r} does not exist")
    if text_unit not in ("line", "paragraph", "document"):
        raise UserError(f"text_unit {text_unit!r} is not valid; valid: line, paragraph, document")
    try:
        docs = open_documents(TextSourceConfig(files=[path], text_column=text_column,
                                               text_unit=text_unit))  # type: ignore[arg-type]  # checked above
    except UserError as err:
        if "holds no documents" in str(err):
            raise UserError(f"text file {path!r} is empty (no non-blank {text_unit}s)") from None
        raise
    bad = [i for i, d in enumerate(docs) if not isinstance(d, str)]
    if bad:
        raise UserError(f"{path}: entry {bad[0] + 1} is a {type(docs[bad[0]]).__name__}, not text")
    return list(docs)
