"""Documents from local text files or HF ``datasets``, as one random-access sequence.

A *document* is either a string, or (``chat=True``) a list of ``{"role", "content"}`` messages that the
tokenizer's chat template renders. Sources:

* ``files``: local files or globs, read by this module (no extra dependency):
  ``.jsonl`` (one JSON object per line, the text in ``text_column``), ``.json`` (a list of objects or
  strings), ``.parquet`` (needs ``pyarrow``), anything else is plain text cut into documents by
  ``text_unit`` (``document``: the whole file, ``paragraph``: blank-line separated, ``line``).
* ``dataset``: a HF ``datasets`` name (hub id or local dataset directory; needs the ``datasets`` package),
  or one of its generic builders ``json`` / ``parquet`` / ``text`` / ``csv`` with ``files`` as its
  ``data_files``. Rows are read lazily by index, so large datasets are not loaded into Python lists.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from pathlib import Path
from typing import Any, Literal, Sequence

from qwen_sae_jax.errors import UserError, did_you_mean

GENERIC_BUILDERS = ("json", "parquet", "text", "csv")


@dataclasses.dataclass
class TextSourceConfig:
    """Where the text comes from (see ``qwen_sae_jax.data.text``)."""

    files: list[str] = dataclasses.field(default_factory=list)
    """Local text files or globs (.txt/.md/.py/... plain text, .jsonl, .json, .parquet). A leading 'tiny:'
    means a path inside the embedded tiny model's folder (e.g. 'tiny:heldout/*.txt')."""
    dataset: str | None = None
    """A HF `datasets` name (hub id or local dataset dir), or json/parquet/text/csv to read `files` through
    `datasets`. Null: read `files` directly."""
    dataset_config: str | None = None
    """The `datasets` configuration name (second argument of load_dataset)."""
    split: str = "train"
    """Dataset split to read."""
    text_column: str = "text"
    """Column (or JSON key) holding the text, or the message list when `chat` is true."""
    text_unit: Literal["document", "paragraph", "line"] = "paragraph"
    """How a plain text file is cut into documents: whole file, blank-line separated paragraphs, or lines."""
    chat: bool = False
    """The text column holds chat messages [{role, content}, ...], rendered with the tokenizer's chat template."""


def _expand(pattern: str) -> list[str]:
    if pattern.startswith("tiny:"):
        from importlib import resources
        base = Path(str(resources.files("qwen_sae_jax") / "assets" / "tiny-qwen3"))
        pattern = str(base / pattern[len("tiny:"):])
    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    matches = [m for m in matches if os.path.isfile(m)]
    if not matches:
        raise UserError(f"data file {pattern!r} matches no file")
    return matches


def _split_text(text: str, unit: str) -> list[str]:
    if unit == "document":
        parts = [text]
    elif unit == "line":
        parts = text.splitlines()
    else:
        parts, current = [], []
        for line in text.splitlines():
            if line.strip():
                current.append(line)
            elif current:
                parts.append("\n".join(current))
                current = []
        if current:
            parts.append("\n".join(current))
    return [p for p in parts if p.strip()]


def _column(row: Any, column: str, where: str) -> Any:
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object or string, got {type(row).__name__}")
    if column not in row:
        raise UserError(f"{where}: no text column {column!r}{did_you_mean(column, list(row))}; "
                        f"columns: {', '.join(map(str, row))} (set data.text_column)")
    return row[column]


def read_utf8(path: str | os.PathLike) -> str:
    """The text of ``path``, which must be UTF-8: anything else raises one UserError naming the file and the
    byte offset of the first invalid byte (never replaced silently)."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); convert it "
                        f"to UTF-8 first, e.g. iconv -f latin1 -t utf-8") from None


def _read_file(path: str, cfg: TextSourceConfig) -> list[Any]:
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        docs = []
        for i, line in enumerate(read_utf8(path).split("\n"), 1):   # JSON strings may hold U+2028
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise UserError(f"{path}:{i}: not valid JSON ({err.msg})") from None
                docs.append(_column(row, cfg.text_column, f"{path}:{i}"))
        return docs
    if suffix == ".json":
        try:
            rows = json.loads(read_utf8(path))
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not valid JSON ({err.msg})") from None
        if not isinstance(rows, list):
            raise UserError(f"{path}: expected a JSON list of documents")
        return [_column(r, cfg.text_column, f"{path}[{i}]") for i, r in enumerate(rows)]
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(f"{path}: reading parquet needs pyarrow (pip install pyarrow), "
                            "or set data.dataset=parquet with the datasets package") from None
        table = pq.read_table(path)
        if cfg.text_column not in table.column_names:
            raise UserError(f"{path}: no text column {cfg.text_column!r}"
                            f"{did_you_mean(cfg.text_column, table.column_names)}; columns: "
                            f"{', '.join(table.column_names)} (set data.text_column)")
        return table.column(cfg.text_column).to_pylist()
    return _split_text(read_utf8(path), cfg.text_unit)


class _DatasetColumn(Sequence):
    """Lazy random access to one column of a HF ``datasets.Dataset``."""

    def __init__(self, ds: Any, column: str):
        self._ds, self._column = ds, column

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, index):
        return self._ds[int(index)][self._column]


def _saved_by_datasets(path: str) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` (dataset_info.json) or
    ``DatasetDict.save_to_disk`` (dataset_dict.json, one folder per split)."""
    return any(os.path.isfile(os.path.join(path, marker)) for marker in ("dataset_info.json", "dataset_dict.json"))


def _open_hf(cfg: TextSourceConfig) -> Sequence[Any]:
    try:
        import datasets
    except ImportError:
        raise UserError("data.dataset needs the `datasets` package (pip install datasets); "
                        "or list local files in data.files and leave data.dataset null") from None
    kwargs: dict[str, Any] = {"split": cfg.split}
    if cfg.dataset in GENERIC_BUILDERS:
        if not cfg.files:
            raise UserError(f"data.dataset={cfg.dataset} reads data.files, which is empty")
        kwargs["data_files"] = [f for p in cfg.files for f in _expand(p)]
        if cfg.dataset == "text":
            kwargs["sample_by"] = cfg.text_unit
    try:
        if cfg.dataset not in GENERIC_BUILDERS and _saved_by_datasets(str(cfg.dataset)):
            ds = datasets.load_from_disk(cfg.dataset)
            if isinstance(ds, datasets.DatasetDict):
                if cfg.split not in ds:
                    raise UserError(f"dataset {cfg.dataset!r} has no split {cfg.split!r}; splits: {', '.join(ds)}")
                ds = ds[cfg.split]
        else:
            ds = datasets.load_dataset(cfg.dataset, cfg.dataset_config, **kwargs)
    except UserError:
        raise
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot open dataset {cfg.dataset!r} (split {cfg.split!r}): {first}") from None
    if cfg.text_column not in ds.column_names:
        raise UserError(f"dataset {cfg.dataset!r} has no text column {cfg.text_column!r}"
                        f"{did_you_mean(cfg.text_column, ds.column_names)}; columns: {', '.join(ds.column_names)} "
                        "(set data.text_column)")
    return _DatasetColumn(ds, cfg.text_column)


def open_documents(cfg: TextSourceConfig) -> Sequence[Any]:
    """All documents of the source, in a fixed order (shuffling happens later, from the seed)."""
    if cfg.dataset is not None:
        docs = _open_hf(cfg)
        name = repr(cfg.dataset)
    else:
        if not cfg.files:
            raise UserError("no text source: set data.files (local files or globs) or data.dataset")
        docs = []
        for pattern in cfg.files:
            for path in _expand(pattern):
                docs.extend(d for d in _read_file(path, cfg) if d)
        name = "data.files " + ", ".join(repr(f) for f in cfg.files)
    if len(docs) == 0:
        raise UserError(f"{name} holds no documents (every file empty?)")
    return docs
