"""The tiny model's text corpus: four Debian-packaged sources plus synthetic chat, each split train/held-out.

Sources (all installed by ``launch/build_tiny_model.py`` with apt):

==========  ==============================================  =================================================
source      Debian package                                  documents
==========  ==============================================  =================================================
english     ``fortunes`` (``/usr/share/games/fortunes``)     one fortune each (ASCII-art files left out)
chinese     ``fortunes-zh`` (chinese, tang300, song100)      one fortune / poem each
docs        ``python3.11-doc`` (``html/_sources/**.rst.txt``)  one reST page each, cut into ~4 KB pieces
code        ``libpython3.11-stdlib`` (``/usr/lib/python3.11``)  one module each, cut into ~4 KB pieces
chat        synthetic (``tinymodel.chat``)                  one ChatML conversation each
==========  ==============================================  =================================================

ANSI colour escapes (the Chinese fortunes are coloured) are removed. Each source's documents are
shuffled with the build seed and a fixed character budget of them is held out (written into the
package's ``assets/tiny-qwen3/heldout/<source>.jsonl``); the rest is the training split.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

FORTUNES_DIR = Path("/usr/share/games/fortunes")
PYDOC_SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
STDLIB_DIR = Path("/usr/lib/python3.11")

SOURCES = ("english", "chinese", "docs", "code", "chat")
CHINESE_FILES = ("chinese", "tang300", "song100")
SKIPPED_FORTUNE_FILES = ("art", "ascii-art")      # pictures, not prose
# stdlib sub-packages that are mostly data, tests or generated tables
SKIPPED_STDLIB_PARTS = ("test", "tests", "idle_test", "lib2to3", "ensurepip", "pydoc_data", "encodings",
                        "site-packages", "dist-packages", "config-3.11-x86_64-linux-gnu", "turtledemo")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
PIECE_CHARS = 4000


@dataclass
class SourceSplit:
    """The documents of one source, split into training and held-out parts."""

    name: str
    train: list[str]
    heldout: list[str]


def _fortunes(path: Path) -> list[str]:
    text = _ANSI.sub("", path.read_text(encoding="utf-8", errors="replace"))
    return [d.strip("\n") for d in re.split(r"\n%\n", text) if d.strip()]


def _pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    """Cut a long text at line boundaries into pieces of about ``size`` characters."""
    out, current, n = [], [], 0
    for line in text.splitlines(keepends=True):
        current.append(line)
        n += len(line)
        if n >= size:
            out.append("".join(current))
            current, n = [], 0
    if "".join(current).strip():
        out.append("".join(current))
    return out


def english_documents() -> list[str]:
    docs = []
    for path in sorted(FORTUNES_DIR.iterdir()):
        if path.is_file() and "." not in path.name and path.name not in CHINESE_FILES + SKIPPED_FORTUNE_FILES:
            docs += _fortunes(path)
    return docs


def chinese_documents() -> list[str]:
    return [d for name in CHINESE_FILES for d in _fortunes(FORTUNES_DIR / name)]


def docs_documents() -> list[str]:
    return [p for path in sorted(PYDOC_SOURCES.rglob("*.rst.txt"))
            for p in _pieces(path.read_text(encoding="utf-8", errors="replace"))]


def code_documents(max_chars: int = 12_000_000) -> list[str]:
    docs, total = [], 0
    for path in sorted(STDLIB_DIR.rglob("*.py")):
        parts = path.relative_to(STDLIB_DIR).parts
        if any(p in SKIPPED_STDLIB_PARTS for p in parts):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        docs += _pieces(text)
        total += len(text)
        if total >= max_chars:
            break
    return docs


def split_documents(name: str, docs: list[str], seed: int, heldout_chars: int) -> SourceSplit:
    """Shuffle ``docs`` with ``seed`` and hold out the first ones until ``heldout_chars`` characters."""
    order = list(range(len(docs)))
    random.Random(f"{seed}-{name}").shuffle(order)
    heldout, n = [], 0
    for i in order:
        if n >= heldout_chars:
            break
        heldout.append(i)
        n += len(docs[i])
    held = set(heldout)
    return SourceSplit(name, [docs[i] for i in order if i not in held], [docs[i] for i in heldout])


def check_sources_installed() -> None:
    """Raise FileNotFoundError naming the Debian package whose files are missing."""
    needed = {"fortunes": FORTUNES_DIR / "fortunes", "fortunes-zh": FORTUNES_DIR / "tang300",
              "python3.11-doc": PYDOC_SOURCES / "glossary.rst.txt", "libpython3.11-stdlib": STDLIB_DIR / "os.py"}
    missing = [pkg for pkg, path in needed.items() if not path.exists()]
    if missing:
        raise FileNotFoundError(f"corpus sources missing; install the Debian package(s): {' '.join(missing)}")


def write_jsonl(path: Path, docs: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
