"""SFT examples: conversations tokenised up front, padded to ``max_len``, served as deterministic batches.

Row ``r`` of the batch of step ``s`` is example ``perm_e[i % N]`` with ``i = s * batch_size + r``,
``e = i // N`` and ``perm_e`` a permutation of the ``N`` examples drawn from ``(seed, e)``: the batches are a
function of the step alone, so resuming needs nothing but the step, and every process can cut out the rows
its devices hold (`SFTData.batch(step, rows)`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from qwen_sae_jax.data.text import open_documents
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.posttrain.chat import detect_language, tokenize_conversation
from qwen_sae_jax.posttrain.config import SFTDataConfig


@dataclasses.dataclass
class SFTData:
    ids: np.ndarray          # [N, L] int32, right-padded with the pad id
    mask: np.ndarray         # [N, L] int32: 1 = token, 0 = padding
    reply: np.ndarray        # [N, L] bool: the token belongs to an assistant reply
    language: np.ndarray     # [N] int32: index of the reply language (-1 without SASFT)
    seed: int = 0

    def __len__(self) -> int:
        return self.ids.shape[0]

    def _permutation(self, epoch: int) -> np.ndarray:
        cache = self.__dict__.setdefault("_perms", {})
        if epoch not in cache:
            if len(cache) > 4:
                cache.clear()
            cache[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self))
        return cache[epoch]

    def indices(self, step: int, batch_size: int, rows: Sequence[int] | range | None = None) -> np.ndarray:
        """Example index of each requested row (default: all ``batch_size``) of the batch of ``step``."""
        rows = range(batch_size) if rows is None else rows
        flat = step * batch_size + np.asarray(list(rows), np.int64)
        return np.asarray([self._permutation(int(i // len(self)))[i % len(self)] for i in flat], np.int64)

    def batch(self, step: int, batch_size: int, rows: Sequence[int] | range | None = None) -> dict[str, np.ndarray]:
        """``{ids, mask, reply, language}`` of the requested rows of step ``step``'s batch."""
        idx = self.indices(step, batch_size, rows)
        return {"ids": self.ids[idx], "mask": self.mask[idx], "reply": self.reply[idx], "language": self.language[idx]}


def _languages_of(cfg: SFTDataConfig, docs: Sequence[Any], replies: list[str], languages: Sequence[str]) -> np.ndarray:
    if cfg.language_column is not None:
        names = list(open_documents(dataclasses.replace(cfg, text_column=cfg.language_column)))
        if len(names) != len(docs):
            raise UserError(f"data.language_column {cfg.language_column!r} has {len(names)} values for {len(docs)} "
                            "conversations (every row needs one)")
    else:
        names = [detect_language(text) for text in replies]
    index = {name: i for i, name in enumerate(languages)}
    bad = sorted({str(n) for n in names if n not in index})
    if bad:
        raise UserError(f"reply language(s) {', '.join(bad)} are not in the features file's languages "
                        f"({', '.join(languages)})")
    return np.asarray([index[n] for n in names], np.int32)


def build_dataset(tokenizer: Any, cfg: SFTDataConfig, pad_id: int, languages: Sequence[str] | None = None) -> SFTData:
    """Tokenise every conversation of ``cfg``'s source; ``languages`` (SASFT) also tags each reply's language."""
    docs = open_documents(cfg)
    L = cfg.max_len
    ids = np.full((len(docs), L), pad_id, np.int32)
    mask = np.zeros((len(docs), L), np.int32)
    reply = np.zeros((len(docs), L), bool)
    replies = []
    for n, messages in enumerate(docs):
        ex = tokenize_conversation(tokenizer, messages, where=f"conversation {n}")
        k = min(len(ex.ids), L)
        ids[n, :k], mask[n, :k], reply[n, :k] = ex.ids[:k], 1, ex.reply[:k]
        replies.append(ex.reply_text)
    if not reply[:, 1:].any():   # position 0 is never a target
        raise UserError(f"the data has no reply tokens after templating and cutting to data.max_len={L}: no "
                        "conversation has an assistant message inside the first max_len tokens")
    language = (_languages_of(cfg, docs, replies, languages) if languages is not None
                else np.full(len(docs), -1, np.int32))
    return SFTData(ids, mask, reply, language, cfg.seed)


class DataPosition:
    """The data state saved with a checkpoint (grain's per-process JSON handler): the next step and the number
    of examples, so that a resume on other data is refused instead of silently reading other batches."""

    def __init__(self, n_examples: int, step: int = 0):
        self.n_examples, self.step = n_examples, step

    def get_state(self) -> dict:
        return {"step": self.step, "examples": self.n_examples}

    def set_state(self, state: dict) -> None:
        if state["examples"] != self.n_examples:
            raise UserError(f"the checkpoint was trained on {state['examples']} conversations, the data now has "
                            f"{self.n_examples}: resume needs the same data")
        self.step = state["step"]
