"""Text -> packed token batches, as a checkpointable ``grain`` pipeline.

Layout of the stream (what makes it independent of the number of processes): a global batch has
``batch_size`` rows, and row ``r`` always comes from its own *stream*: the documents ``docs[r::batch_size]``,
shuffled from ``(seed, r)`` (a fresh order every epoch, epochs repeat forever), tokenised, each followed by
the EOS token (the document separator, ``add_eos``), concatenated and cut into ``ctx_len`` windows
(optionally each window starting with BOS, ``prepend_bos``). A process builds only the rows it owns
(``rows_for_process``, or the ``rows`` its devices hold, `train.mesh.process_batch_rows`), so it reads only its
share of the documents, and N processes together produce exactly the batches a single process would.

The iterator's state (``get_state()`` / ``set_state()``, a JSON-able dict) is per row: the shuffled
position of the current document and the offset inside it, so resuming restores the exact token stream.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Sequence

import grain
import numpy as np

from qwen_sae_jax.data.text import TextSourceConfig, open_documents
from qwen_sae_jax.errors import UserError


@dataclasses.dataclass
class DataConfig(TextSourceConfig):
    """Text source (see TextSourceConfig) plus tokenisation and packing."""

    ctx_len: int = 128
    """Tokens per packed sequence fed to the model."""
    batch_size: int = 16
    """Sequences per model forward, over all processes (each row reads its own share of the documents)."""
    seed: int = 0
    """Seed of the document shuffle (a new order every epoch)."""
    add_eos: bool = True
    """Append the tokenizer's EOS token after every document (the document separator)."""
    prepend_bos: bool = False
    """Start every packed sequence with the BOS token (Qwen3 has none by default: then this is an error)."""

    def __post_init__(self):
        if self.ctx_len < 2:
            raise UserError(f"data.ctx_len must be >= 2, got {self.ctx_len}")
        if self.batch_size < 1:
            raise UserError(f"data.batch_size must be >= 1, got {self.batch_size}")


def special_token_ids(tokenizer: Any) -> list[int]:
    """Ids of every special token (BOS/EOS/pad, <|im_start|>, <|im_end|>, <think>, ...)."""
    ids = set(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
    for idx, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(tok, "special", False):
            ids.add(int(idx))
    return sorted(ids)


def make_tokenize(tokenizer: Any, cfg: DataConfig) -> Callable[[Any], np.ndarray]:
    """Document -> int32 token ids (with EOS appended when ``cfg.add_eos``)."""
    eos = tokenizer.eos_token_id
    if cfg.add_eos and eos is None:
        raise UserError("data.add_eos is true but the tokenizer has no EOS token; set data.add_eos=false")

    def tokenize(doc: Any) -> np.ndarray:
        if cfg.chat:
            if not isinstance(doc, (list, tuple)):
                raise UserError("data.chat is true but a document is not a list of {role, content} messages")
            text = tokenizer.apply_chat_template(list(doc), tokenize=False)
        else:
            if not isinstance(doc, str):
                raise UserError(f"a document is a {type(doc).__name__}, not text (chat messages need data.chat=true)")
            text = doc
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]   # packing cuts long docs
        if cfg.add_eos:
            ids = list(ids) + [eos]
        return np.asarray(ids, dtype=np.int32)

    return tokenize


class PackIterDataset(grain.IterDataset):
    """Concatenate token arrays and cut them into fixed windows of ``seq_len`` tokens.

    With ``bos_id`` set, every window is ``[bos] + seq_len - 1`` stream tokens. Never ends while its parent
    does not; a trailing partial window at the parent's end is dropped.
    """

    def __init__(self, parent: grain.IterDataset, seq_len: int, bos_id: int | None = None):
        super().__init__(parent)
        self._seq_len, self._bos_id = seq_len, bos_id

    def __iter__(self) -> "_PackIterator":
        return _PackIterator(self._parent.__iter__(), self._seq_len, self._bos_id)

    def __str__(self) -> str:
        return f"PackIterDataset(seq_len={self._seq_len}, bos_id={self._bos_id})"


class _PackIterator(grain.DatasetIterator):
    """State: the parent's state *before* the document being read, and the offset inside it."""

    def __init__(self, parent: grain.DatasetIterator, seq_len: int, bos_id: int | None):
        super().__init__(parent)
        self._seq_len, self._bos_id = seq_len, bos_id
        self._doc = np.zeros(0, np.int32)
        self._doc_state = parent.get_state()
        self._offset = 0

    def __next__(self) -> np.ndarray:
        need = self._seq_len - (self._bos_id is not None)
        pieces = [] if self._bos_id is None else [np.asarray([self._bos_id], np.int32)]
        while need:
            if self._offset >= len(self._doc):
                self._doc_state = self._parent.get_state()
                self._doc = next(self._parent)
                self._offset = 0
            piece = self._doc[self._offset:self._offset + need]
            pieces.append(piece)
            self._offset += len(piece)
            need -= len(piece)
        return np.concatenate(pieces)

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._doc_state, "offset": self._offset}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._doc_state = state["parent"]
        self._doc = np.zeros(0, np.int32)
        self._offset = state["offset"]
        if self._offset:
            self._doc = next(self._parent)


# Rows read synchronously: one row is a handful of documents per batch, and hundreds of rows with a
# thread pool each would cost more than the tokenisation they overlap.
_SYNC_READ = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


def row_seed(seed: int, row: int) -> int:
    """A 32-bit seed for row ``row`` of the batch, stable across processes and Python versions."""
    digest = hashlib.sha256(f"{seed}/{row}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def rows_for_process(batch_size: int, process_index: int, process_count: int) -> range:
    """The global batch rows a process produces (contiguous, equal shares)."""
    if batch_size % process_count:
        raise UserError(f"data.batch_size={batch_size} must be divisible by the number of processes "
                        f"({process_count})")
    share = batch_size // process_count
    return range(process_index * share, (process_index + 1) * share)


def token_rows_dataset(docs: Sequence[Any], tokenize: Callable[[Any], np.ndarray], cfg: DataConfig,
                       rows: range, bos_id: int | None = None) -> grain.IterDataset:
    """One grain dataset yielding ``[len(rows), ctx_len]`` int32 batches (the process's rows of each global batch)."""
    if len(docs) < cfg.batch_size:
        raise UserError(f"the dataset has {len(docs)} document(s) but data.batch_size={cfg.batch_size}: each "
                        "row of a batch reads its own share of the documents, so it needs at least as many "
                        "documents as rows (lower data.batch_size, or cut files finer with data.text_unit)")
    source = grain.MapDataset.source(docs)
    streams = []
    for r in rows:
        stream = source[r::cfg.batch_size].shuffle(seed=row_seed(cfg.seed, r)).repeat(None).map(tokenize)
        streams.append(PackIterDataset(stream.to_iter_dataset(_SYNC_READ), cfg.ctx_len, bos_id))
    return grain.experimental.ZipIterDataset(streams).map(lambda seqs: np.stack(seqs))


class TokenBatches:
    """The process-local token batches of the run: ``next(it) -> int32 [rows, ctx_len]``; checkpointable."""

    def __init__(self, tokenizer: Any, cfg: DataConfig, process_index: int = 0, process_count: int = 1,
                 docs: Sequence[Any] | None = None, rows: range | None = None):
        if tokenizer is None:
            raise UserError("the model has no tokenizer, so text cannot be tokenised (train from an "
                            "activation cache instead)")
        bos_id = None
        if cfg.prepend_bos:
            bos_id = tokenizer.bos_token_id
            if bos_id is None:
                raise UserError("data.prepend_bos is true but the tokenizer has no BOS token "
                                "(Qwen3 has none); set data.prepend_bos=false")
        self.rows = rows_for_process(cfg.batch_size, process_index, process_count) if rows is None else rows
        docs = open_documents(cfg) if docs is None else docs
        self.num_documents = len(docs)
        self._dataset = token_rows_dataset(docs, make_tokenize(tokenizer, cfg), cfg, self.rows, bos_id)
        self._iter = iter(self._dataset)

    def __iter__(self) -> "TokenBatches":
        return self

    def __next__(self) -> np.ndarray:
        return next(self._iter)

    def get_state(self) -> dict[str, Any]:
        return self._iter.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._iter.set_state(state)
