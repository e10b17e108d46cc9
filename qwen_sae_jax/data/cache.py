"""On-disk activation cache: plain ``.npy`` shards and JSON manifests, readable without this package.

Format 2 (written now; every process of a multi-host run writes its own shards)::

    CACHE_DIR/
      manifest.json                       the cache: {"format": 2, "hooks": [...], "d": D, "dtype": "float32",
                                          "model": name, "rows": total, "writers": [WRITER, ...]}
      process_00000/manifest.json         that writer's own progress: {"format": 2, "hooks", "d", "dtype",
                                          "model", **WRITER} (rewritten after each of its shards)
      process_00000/<hook_name>/shard_00000.npy   [rows_i, D] array (row r of every hook is the same token)
      process_00001/...

    WRITER = {"dir": "process_00001", "process": 1, "batch_rows": [4, 8], "rows": R,
              "shards": [rows of shard 0, rows of shard 1, ...], "chunks": [rows of chunk 0, ...]}

A writer is one process: it stores the filtered activations of the token rows ``batch_rows`` ([start, stop)
of every global token batch) that its devices hold; processes holding the same rows (the 'model' mesh axis
across processes) write them once, from the lowest process. A chunk is what the writer appended at once
(one token batch); ``sum(shards) == sum(chunks) == rows`` per writer.

The global row order: chunk 0 of every writer (writers in ``batch_rows`` order, as listed), then chunk 1 of
every writer, and so on. A chunk holds a batch's kept positions in token order, so this is the order a
single process writes the same batches in: a cache written by N processes is the cache one process writes.
Every row of ``hook`` in this order, without this package (``tests/data/test_cache.py`` runs this)::

    m = json.load(open("CACHE_DIR/manifest.json"))
    mine = {w["dir"]: np.concatenate([np.load(f"CACHE_DIR/{w['dir']}/{hook}/shard_{s:05d}.npy")
                                      for s in range(len(w["shards"]))]) for w in m["writers"] if w["shards"]}
    taken, out = {w["dir"]: 0 for w in m["writers"]}, []
    for c in range(max(len(w["chunks"]) for w in m["writers"])):
        for w in m["writers"]:
            if c < len(w["chunks"]):
                out.append(mine[w["dir"]][taken[w["dir"]]:taken[w["dir"]] + w["chunks"][c]])
                taken[w["dir"]] += w["chunks"][c]
    rows = np.concatenate(out)                                          # [m["rows"], D]

Format 1 (one process; still read): ``manifest.json`` = {"format": 1, "hooks", "d", "dtype", "shards",
"rows", "model"} and the shards at ``CACHE_DIR/<hook_name>/shard_00000.npy``, rows in shard order.

``bfloat16`` activations are stored as their raw 16 bits (``uint16``; the manifest says ``"dtype":
"bfloat16"``): view them with ``np.load(...).view(ml_dtypes.bfloat16)``.

Atomicity: shards and manifests are written to a temporary file and renamed, and a manifest lists only
complete shards, so a killed writer leaves a valid cache. A writer rewrites its own manifest after each
shard; the cache's ``manifest.json`` merges them: rewritten by process 0 after each shard when there is one
writer, else at every `CacheWriter.sync` (each checkpoint and the end of the run, after every writer has
flushed: a barrier), so in a multi-host cache it lists every writer's shards as of the same token batch.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import ml_dtypes
import numpy as np

from qwen_sae_jax.errors import UserError

FORMAT = 2
READABLE_FORMATS = (1, 2)
_STORED = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}

# allgather(values [k] int64) -> [num_processes, k]: every process's values, in process order; a collective
# (every process calls it at the same point), so it is also a barrier.
AllGather = Callable[[np.ndarray], np.ndarray]


def _atomic_write_bytes(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, body: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, lambda fh: fh.write(json.dumps(body, indent=1).encode()))


def _dtype_name(dtype) -> str:
    name = np.dtype(dtype).name
    if name not in _STORED:
        raise UserError(f"activation cache: dtype {name} is not supported; valid: {', '.join(_STORED)}")
    return name


def writer_dir(process: int) -> str:
    """The folder of process ``process``'s shards and manifest, relative to the cache folder."""
    return f"process_{process:05d}"


def _cut(sizes: Sequence[int], rows: int) -> list[int]:
    """The leading entries of ``sizes`` within the first ``rows`` rows: every entry ending at or before
    ``rows`` (empty ones too), then the part below ``rows`` of the entry crossing it."""
    out, total = [], 0
    for n in sizes:
        if total + n > rows:
            if total < rows:
                out.append(rows - total)
            break
        out.append(n)
        total += n
    return out


def _read_manifest(directory: Path) -> dict | None:
    path = directory / "manifest.json"
    if not path.exists():
        return None
    meta = json.loads(path.read_text())
    if meta.get("format", 1) not in READABLE_FORMATS:
        raise UserError(f"activation cache {str(directory)!r} has format {meta.get('format')}; this version "
                        f"reads formats {', '.join(map(str, READABLE_FORMATS))}")
    return meta


class CacheWriter:
    """One process's writer: appends rows [H, n, D] per hook as one chunk; a shard is written when
    ``shard_rows`` rows are pending.

    ``process``: this process's index; ``batch_rows``: the [start, stop) token rows of every batch whose
    activations it writes (recorded; (0, 0) where no other writer exists to order it against);
    ``writers``: {process: (start, stop)} of every writing process of the job (None: this one only). A
    process not in ``writers`` (its rows are written by another process) keeps no shards but still takes
    part in `sync` / `checkpoint_state` / `restore`. ``allgather`` (see `AllGather`) is given in a
    multi-process job; without it `sync` merges the manifests at once (one process, or a test
    that orders the writers' calls itself). Build it for a training job with `for_mesh`.
    """

    def __init__(self, directory: str | os.PathLike, hooks: Sequence[str], d: int, dtype, shard_rows: int,
                 model: str = "", *, process: int = 0, batch_rows: tuple[int, int] = (0, 0),
                 writers: dict[int, tuple[int, int]] | None = None, allgather: AllGather | None = None):
        self.dir = Path(directory)
        self.hooks, self.d, self.shard_rows = list(hooks), int(d), int(shard_rows)
        self.dtype, self.model = _dtype_name(dtype), model
        self.process, self.batch_rows = int(process), (int(batch_rows[0]), int(batch_rows[1]))
        if writers is None:
            writers = {self.process: self.batch_rows}
        self.writers = {int(p): (int(a), int(b)) for p, (a, b) in sorted(writers.items(), key=lambda kv: kv[1])}
        self.active = self.process in self.writers
        self._allgather = allgather
        self._check_existing()
        own = _read_manifest(self.dir / writer_dir(self.process)) if self.active else None
        if own is not None:
            self._check_same(own, self.dir / writer_dir(self.process))
        self.shards: list[int] = list(own["shards"]) if own else []     # rows per complete shard on disk
        self._chunks: list[int] = list(own["chunks"]) if own else []    # rows per chunk, pending rows included
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    @classmethod
    def for_mesh(cls, directory: str | os.PathLike, hooks: Sequence[str], d: int, dtype, shard_rows: int,
                 model: str, *, mesh, batch_size: int) -> "CacheWriter":
        """This process's writer in a job on ``mesh`` whose token batches ([batch_size, T], rows over 'data')
        are split over the processes: each process writes the rows its devices hold, once per set of rows."""
        import jax
        blocks = _process_blocks(mesh, batch_size)
        pid = jax.process_index()
        return cls(directory, hooks, d, dtype, shard_rows, model, process=pid, batch_rows=blocks[pid],
                   writers=_writers(blocks), allgather=_process_allgather if jax.process_count() > 1 else None)

    # ------------------------------------------------------------------ existing caches
    def _check_same(self, meta: dict, where: Path) -> None:
        if meta.get("hooks") != self.hooks or meta.get("d") != self.d or meta.get("dtype") != self.dtype:
            raise UserError(f"activation cache {str(where)!r} holds other hooks/width/dtype ({meta.get('hooks')}, "
                            f"d={meta.get('d')}, {meta.get('dtype')}); use another cache.dir")

    def _check_existing(self) -> None:
        """An existing cache is extended only with the same hooks, width, dtype and writers (else its row
        order would not be batch order)."""
        meta = _read_manifest(self.dir)
        if meta is None:
            return
        self._check_same(meta, self.dir)
        if meta.get("format", 1) == 1:
            raise UserError(f"activation cache {str(self.dir)!r} was written in format 1 (one process, an older "
                            "version); it can be read (cache.mode=read) but not extended: use another cache.dir")
        had = {w["process"]: tuple(w["batch_rows"]) for w in meta["writers"]}
        if had and had != self.writers:
            raise UserError(f"activation cache {str(self.dir)!r} was written by {_describe(had)}; this run writes "
                            f"from {_describe(self.writers)}, so its rows would not follow batch order: use "
                            "another cache.dir")

    # ------------------------------------------------------------------ writing
    @property
    def rows(self) -> int:
        """This writer's rows on disk (complete shards)."""
        return int(sum(self.shards))

    def append(self, rows: np.ndarray) -> None:
        """Add one chunk: rows [H, n, D] (hooks in the cache's order; n may be 0). No-op on a process that
        does not write."""
        if not self.active:
            return
        self._chunks.append(int(rows.shape[1]))
        if rows.shape[1]:
            self._pending.append(np.asarray(rows))
            self._pending_rows += rows.shape[1]
        while self._pending_rows >= self.shard_rows:
            self._write_shard(self.shard_rows)

    def flush(self) -> None:
        """Write every pending row (a short shard), then `sync` (every process at the same point, e.g. at
        each checkpoint)."""
        if self._pending_rows:
            self._write_shard(self._pending_rows)
        self.sync()

    def sync(self) -> None:
        """Rewrite the cache's manifest from every writer's (process 0; with an ``allgather``, between two
        barriers: no process writes while it reads their manifests)."""
        if self._allgather is not None:
            self._allgather(np.zeros(1, np.int64))
        if self.process == min(self.writers):
            self._merge()
        if self._allgather is not None:
            self._allgather(np.zeros(1, np.int64))

    def _write_shard(self, n: int) -> None:
        data = np.concatenate(self._pending, axis=1)                    # [H, pending, D]
        shard, rest = data[:, :n], data[:, n:]
        self._pending, self._pending_rows = ([rest] if rest.shape[1] else []), rest.shape[1]
        index = len(self.shards)
        for h, hook in enumerate(self.hooks):
            folder = self.dir / writer_dir(self.process) / hook
            folder.mkdir(parents=True, exist_ok=True)
            arr = np.ascontiguousarray(shard[h])
            if self.dtype == "bfloat16":
                arr = arr.view(np.uint16)
            _atomic_write_bytes(folder / f"shard_{index:05d}.npy", lambda fh, a=arr: np.save(fh, a))
        self.shards.append(int(n))
        self._write_manifest()

    def _entry(self) -> dict:
        """This writer's WRITER record (see the module docstring); chunks cover the rows on disk."""
        return {"dir": writer_dir(self.process), "process": self.process, "batch_rows": list(self.batch_rows),
                "rows": self.rows, "shards": list(self.shards), "chunks": _cut(self._chunks, self.rows)}

    def _header(self) -> dict:
        return {"format": FORMAT, "hooks": self.hooks, "d": self.d, "dtype": self.dtype, "model": self.model}

    def _write_manifest(self) -> None:
        _write_json(self.dir / writer_dir(self.process) / "manifest.json", {**self._header(), **self._entry()})
        if len(self.writers) == 1:
            self._merge()

    def _merge(self) -> None:
        """The cache's manifest from every writer's own (a writer with nothing on disk yet: no rows)."""
        entries = []
        for p, block in self.writers.items():
            own = _read_manifest(self.dir / writer_dir(p))
            entry = {k: own[k] for k in ("dir", "process", "batch_rows", "rows", "shards", "chunks")} if own else \
                {"dir": writer_dir(p), "process": p, "batch_rows": list(block), "rows": 0, "shards": [], "chunks": []}
            entries.append(entry)
        _write_json(self.dir / "manifest.json",
                    {**self._header(), "rows": sum(e["rows"] for e in entries), "writers": entries})

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict:
        """{"rows": [...], "chunks": [...]}: every process's rows and chunks on disk, in process order (0 for
        a process that does not write); call it on every process after `flush` (a collective)."""
        local = np.asarray([self.rows, len(_cut(self._chunks, self.rows))], np.int64)
        table = self._allgather(local) if self._allgather is not None else local[None]     # [processes, 2]
        table = np.asarray(table).reshape(-1, 2)
        return {"rows": [int(r) for r in table[:, 0]], "chunks": [int(c) for c in table[:, 1]]}

    def restore(self, state: dict) -> None:
        """Go back to a checkpoint's `checkpoint_state`: each process truncates its own shards, then `sync`."""
        if not isinstance(state, dict):
            raise UserError(f"the checkpoint comes from a version that wrote one-process caches (cache rows "
                            f"{state!r}); finish that run with it, or start a new run_dir")
        if len(state["rows"]) <= self.process:
            raise UserError(f"the checkpoint's activation cache state covers {len(state['rows'])} process(es); "
                            f"resume with that many processes (this is process {self.process})")
        if self.active:
            self.truncate(state["rows"][self.process], state["chunks"][self.process])
        self.sync()

    def truncate(self, rows: int, chunks: int) -> None:
        """Keep this writer's first ``chunks`` chunks, ``rows`` rows (a shard boundary); delete later shards."""
        kept = _cut(self.shards, rows)
        if kept != self.shards[:len(kept)] or sum(kept) != rows or len(self._chunks) < chunks \
                or sum(self._chunks[:chunks]) != rows:
            raise UserError(f"activation cache {str(self.dir / writer_dir(self.process))!r} does not match the "
                            f"checkpoint: it holds shards {self.shards} in {len(self._chunks)} chunks, the checkpoint "
                            f"{rows} rows in {chunks} chunks at a shard boundary; use another cache.dir")
        for hook in self.hooks:
            for path in (self.dir / writer_dir(self.process) / hook).glob("shard_*.npy"):
                if int(path.stem.split("_")[1]) >= len(kept):
                    path.unlink()
        self.shards, self._chunks = kept, self._chunks[:chunks]
        self._pending, self._pending_rows = [], 0
        self._write_manifest()


def _describe(writers: dict[int, tuple[int, int]]) -> str:
    return ", ".join(f"process {p} (batch rows [{a}, {b}))" for p, (a, b) in writers.items())


def _process_blocks(mesh, batch_size: int) -> dict[int, tuple[int, int]]:
    """{process: (start, stop)}: the rows of a [batch_size, ...] batch sharded over 'data' each process holds."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P
    held: dict[int, set[int]] = {}
    for device, (rows,) in NamedSharding(mesh, P("data")).devices_indices_map((batch_size,)).items():
        held.setdefault(device.process_index, set()).update(  # type: ignore[attr-defined]  # not in jaxlib's Device stub
            range(*rows.indices(batch_size)))
    blocks = {p: (min(r), max(r) + 1) for p, r in sorted(held.items())}
    for p, (a, b) in blocks.items():
        if len(held[p]) != b - a:
            raise UserError(f"process {p}'s devices hold rows {sorted(held[p])} of the data axis, not one block; "
                            "order the mesh devices by process")
    return blocks


def _writers(blocks: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """The writing processes: for each distinct block of batch rows, the lowest process holding it."""
    writers: dict[int, tuple[int, int]] = {}
    for p, block in sorted(blocks.items()):
        if block in writers.values():
            continue
        if any(a < block[1] and block[0] < b for a, b in writers.values()):
            raise UserError(f"the processes' rows of the data axis overlap without being equal ({_describe(writers)}"
                            f", process {p} [{block[0]}, {block[1]})); order the mesh devices by process")
        writers[p] = block
    return writers


def _process_allgather(values: np.ndarray) -> np.ndarray:
    """`AllGather` over the processes of a jax.distributed job."""
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(np.asarray(values)))


class CacheReader:
    """Reads rows [H, n, D] in the global row order (module docstring), wrapping around at the end (epochs);
    state = the next row. Any number of processes may read the same cache, each the rows it asks for."""

    def __init__(self, directory: str | os.PathLike, hooks: Sequence[str]):
        self.dir = Path(directory)
        meta = _read_manifest(self.dir)
        if meta is None:
            raise UserError(f"activation cache {str(self.dir)!r} has no manifest.json (write it with cache.mode=write)")
        missing = [h for h in hooks if h not in meta["hooks"]]
        if missing:
            raise UserError(f"activation cache {str(self.dir)!r} lacks hook(s) {', '.join(missing)}; it holds "
                            f"{', '.join(meta['hooks'])}")
        if not meta["rows"]:
            raise UserError(f"activation cache {str(self.dir)!r} is empty")
        self.hooks, self.d, self.dtype = list(hooks), int(meta["d"]), meta["dtype"]
        self.rows = int(meta["rows"])
        self.model = meta.get("model", "")
        if meta.get("format", 1) == 1:
            writers = [{"dir": ".", "shards": meta["shards"], "chunks": [self.rows]}]
        else:
            writers = meta["writers"]
        self._dirs = [self.dir / w["dir"] for w in writers]
        self._bounds = [np.cumsum([0] + list(w["shards"])) for w in writers]           # per writer [shards + 1]
        self._order = _global_order([list(w["chunks"]) for w in writers])
        if any(b[-1] != sum(w["chunks"]) for b, w in zip(self._bounds, writers)) or self._order.rows != self.rows:
            raise UserError(f"activation cache {str(self.dir)!r}: its manifest.json is inconsistent (shard, chunk "
                            "and total row counts differ)")
        self._arrays: dict[tuple[int, str, int], np.ndarray] = {}
        self.position = 0

    @property
    def numpy_dtype(self):
        return ml_dtypes.bfloat16 if self.dtype == "bfloat16" else np.dtype(self.dtype)

    def _shard(self, writer: int, hook: str, index: int) -> np.ndarray:
        key = (writer, hook, index)
        if key not in self._arrays:
            path = self._dirs[writer] / hook / f"shard_{index:05d}.npy"
            try:
                arr = np.load(path, mmap_mode="r")
            except FileNotFoundError:
                raise UserError(f"activation cache shard {str(path)!r} is missing: every process needs the whole "
                                "cache.dir (a shared filesystem)") from None
            self._arrays[key] = arr.view(ml_dtypes.bfloat16) if self.dtype == "bfloat16" else arr
        return self._arrays[key]

    def locate(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global rows index [n] (in [0, rows)) -> (writer [n], row inside that writer's rows [n])."""
        order = self._order
        k = np.searchsorted(order.start, index, side="right") - 1        # the chunk holding each row
        return order.writer[k], order.first[k] + index - order.start[k]

    def read(self, start: int, n: int, row_slice: slice = slice(None)) -> np.ndarray:
        """Global rows [start, start + n) (modulo the cache size) of every hook: [H, n, D][:, row_slice]."""
        index = np.arange(start, start + n)[row_slice] % self.rows
        out = np.empty((len(self.hooks), len(index), self.d), self.numpy_dtype)
        writer, local = self.locate(index)
        for w in np.unique(writer):
            in_w = np.flatnonzero(writer == w)
            shard_of = np.searchsorted(self._bounds[w], local[in_w], side="right") - 1
            for s in np.unique(shard_of):
                sel = in_w[shard_of == s]
                rows = local[sel] - self._bounds[w][s]
                for h, hook in enumerate(self.hooks):
                    out[h, sel] = self._shard(int(w), hook, int(s))[rows]
        return out

    def get_state(self) -> dict:
        return {"position": int(self.position)}

    def set_state(self, state: dict) -> None:
        self.position = int(state["position"])


class _ChunkOrder(NamedTuple):
    """The non-empty chunks in global order: k of them."""
    start: np.ndarray    # [k] global row of the chunk's first row (increasing)
    writer: np.ndarray   # [k] the writer holding it
    first: np.ndarray    # [k] its first row among that writer's rows
    rows: int            # total rows


def _global_order(chunks: list[list[int]]) -> _ChunkOrder:
    """From each writer's chunk sizes: chunk 0 of every writer (in the given order), then chunk 1, ..."""
    n = max(len(c) for c in chunks)
    sizes = np.zeros((n, len(chunks)), np.int64)                      # [chunks, writers]
    for w, c in enumerate(chunks):
        sizes[:len(c), w] = c
    first = np.cumsum(sizes, axis=0) - sizes                          # [chunks, writers]
    writer = np.broadcast_to(np.arange(len(chunks)), sizes.shape)
    keep = sizes.ravel() > 0
    size = sizes.ravel()[keep]
    return _ChunkOrder(np.cumsum(size) - size, writer.ravel()[keep], first.ravel()[keep], int(size.sum()))
