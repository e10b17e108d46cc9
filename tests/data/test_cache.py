"""The .npy activation cache: shards, manifests, bfloat16 bits, wrap-around reads, several writers (simulated
processes) merged into one global row order, reading with 1 or 2 readers, truncation to a checkpoint."""
import json

import ml_dtypes
import numpy as np
import pytest

from qwen_sae_jax.data import cache as cache_mod
from qwen_sae_jax.data.cache import CacheReader, CacheWriter
from qwen_sae_jax.errors import UserError

HOOKS = ["layers.0", "layers.1.mlp"]
LAYOUT = {0: (0, 4), 1: (4, 8)}           # two processes, each writing half of every token batch


def _plain_rows(directory, hook: str) -> np.ndarray:
    """Every row of ``hook`` in the global order, read with json + numpy only: the module docstring's code."""
    m = json.loads((directory / "manifest.json").read_text())
    mine = {w["dir"]: np.concatenate([np.load(directory / w["dir"] / hook / f"shard_{s:05d}.npy")
                                      for s in range(len(w["shards"]))]) for w in m["writers"] if w["shards"]}
    taken, out = {w["dir"]: 0 for w in m["writers"]}, []
    for c in range(max(len(w["chunks"]) for w in m["writers"])):
        for w in m["writers"]:
            if c < len(w["chunks"]):
                out.append(mine[w["dir"]][taken[w["dir"]]:taken[w["dir"]] + w["chunks"][c]])
                taken[w["dir"]] += w["chunks"][c]
    return np.concatenate(out)                                          # [m["rows"], D]


def _batches(seed: int, n: int) -> list[list[np.ndarray]]:
    """n token batches, each as [rows of process 0, rows of process 1] ([H, kept, 3] each, some empty)."""
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=(2, int(rng.choice([0, 2, 3, 7])), 3)).astype(np.float32) for _ in LAYOUT]
            for _ in range(n)]


def _one_process(directory, batches) -> CacheWriter:
    """What one process holding all the batch rows writes: each batch's rows in token order, one chunk."""
    w = CacheWriter(directory, HOOKS, 3, np.float32, shard_rows=5, batch_rows=(0, 8))
    for parts in batches:
        w.append(np.concatenate(parts, axis=1))
    w.flush()
    return w


def _two_writers(directory) -> list[CacheWriter]:
    return [CacheWriter(directory, HOOKS, 3, np.float32, shard_rows=5, process=p, batch_rows=LAYOUT[p],
                        writers=LAYOUT) for p in LAYOUT]


def test_roundtrip_shards_and_plain_numpy(tmp_path):
    rows = np.random.default_rng(0).normal(size=(2, 23, 3)).astype(np.float32)
    w = CacheWriter(tmp_path, HOOKS, 3, np.float32, shard_rows=10, batch_rows=(0, 8))
    w.append(rows[:, :7])
    w.flush()                                                  # a short shard at a checkpoint
    w.append(rows[:, 7:19])
    assert w.shards == [7, 10]
    w.append(rows[:, 19:])
    w.flush()
    assert w.shards == [7, 10, 6]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == 2 and manifest["rows"] == 23 and manifest["hooks"] == HOOKS
    assert manifest["writers"] == [{"dir": "process_00000", "process": 0, "batch_rows": [0, 8], "rows": 23,
                                    "shards": [7, 10, 6], "chunks": [7, 12, 4]}]
    # readable without this package
    np.testing.assert_array_equal(np.load(tmp_path / "process_00000" / "layers.1.mlp" / "shard_00001.npy"),
                                  rows[1, 7:17])
    np.testing.assert_array_equal(_plain_rows(tmp_path, "layers.0"), rows[0])
    r = CacheReader(tmp_path, ["layers.1.mlp"])
    np.testing.assert_array_equal(r.read(8, 20)[0], np.concatenate([rows[1, 8:], rows[1, :5]]))  # wraps around
    np.testing.assert_array_equal(r.read(0, 23, slice(4, 9))[0], rows[1, 4:9])
    w2 = CacheWriter(tmp_path, HOOKS, 3, np.float32, shard_rows=10, batch_rows=(0, 8))   # reopened: continues
    assert w2.shards == [7, 10, 6]
    with pytest.raises(UserError, match="does not match the checkpoint"):
        w2.truncate(10, 1)                   # not a shard boundary, nor the end of chunk 0
    with pytest.raises(UserError, match="does not match the checkpoint"):
        w2.truncate(17, 1)                   # a shard boundary, but 1 chunk is 7 rows
    w2.truncate(7, 1)
    assert CacheReader(tmp_path, ["layers.0"]).rows == 7
    assert not (tmp_path / "process_00000" / "layers.0" / "shard_00001.npy").exists()
    with pytest.raises(UserError, match="holds other hooks"):
        CacheWriter(tmp_path, ["layers.0"], 3, np.float32, shard_rows=10)
    with pytest.raises(UserError, match="lacks hook"):
        CacheReader(tmp_path, ["layers.3"])


def test_bfloat16_is_stored_as_its_bits(tmp_path):
    rows = np.random.default_rng(1).normal(size=(1, 5, 2)).astype(ml_dtypes.bfloat16)
    w = CacheWriter(tmp_path, ["layers.0"], 2, ml_dtypes.bfloat16, shard_rows=8)
    w.append(rows)
    w.flush()
    raw = np.load(tmp_path / "process_00000" / "layers.0" / "shard_00000.npy")
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw.view(ml_dtypes.bfloat16), rows[0])
    np.testing.assert_array_equal(CacheReader(tmp_path, ["layers.0"]).read(0, 5)[0], rows[0])


def test_two_writers_merge_into_the_one_process_order(tmp_path):
    """Two processes each write their half of every batch; the one manifest lists both writers' shards, and
    the global order is the order one process writes the same batches in (the shards cut chunks anywhere)."""
    batches = _batches(0, 9)
    batches[-1][0] = batches[-1][0][:, :0]                       # process 0 keeps nothing of the last batch
    _one_process(tmp_path / "one", batches)
    writers = _two_writers(tmp_path / "two")
    for parts in batches:
        for w, rows in zip(writers, parts):
            w.append(rows)
    for w in reversed(writers):              # a barrier: process 0 merges after every writer has flushed
        w.flush()
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert [(w["dir"], w["batch_rows"]) for w in manifest["writers"]] == [("process_00000", [0, 4]),
                                                                        ("process_00001", [4, 8])]
    for p, w in enumerate(manifest["writers"]):
        assert w["chunks"] == [parts[p].shape[1] for parts in batches]       # empty chunks kept
        assert sum(w["shards"]) == w["rows"] and max(w["shards"]) == 5
    assert manifest["rows"] == sum(sum(p.shape[1] for p in parts) for parts in batches)
    want = CacheReader(tmp_path / "one", HOOKS).read(0, manifest["rows"])
    reader = CacheReader(tmp_path / "two", HOOKS)
    np.testing.assert_array_equal(reader.read(0, reader.rows), want)
    for h, hook in enumerate(HOOKS):
        np.testing.assert_array_equal(_plain_rows(tmp_path / "two", hook), want[h])

    # two readers, each reading its half of every global batch of 12 rows (wrapping around), together
    # read what one reader reads
    readers = [CacheReader(tmp_path / "two", HOOKS) for _ in range(2)]
    for start in range(0, 3 * reader.rows, 12):
        halves = [r.read(start, 12, slice(6 * i, 6 * i + 6)) for i, r in enumerate(readers)]
        np.testing.assert_array_equal(np.concatenate(halves, axis=1), reader.read(start, 12))


def test_a_killed_run_leaves_a_valid_cache_and_resumes_from_its_checkpoint(tmp_path):
    """Rows written after the last sync (checkpoint) are not listed; a restarted job truncates each process's
    shards to the checkpoint's state and continues into the cache an uninterrupted job writes."""
    batches = _batches(1, 8)
    batches[3][1] = batches[3][1][:, :0]                         # an empty chunk just before the checkpoint
    _one_process(tmp_path / "one", batches)
    writers = _two_writers(tmp_path / "two")
    for parts in batches[:4]:
        for w, rows in zip(writers, parts):
            w.append(rows)
    for w in reversed(writers):
        w.flush()
    state = [w.checkpoint_state() for w in writers]          # one process each: gathered by hand below
    checkpoint = {"rows": [s["rows"][0] for s in state], "chunks": [s["chunks"][0] for s in state]}
    assert checkpoint["chunks"] == [4, 4]
    at_checkpoint = CacheReader(tmp_path / "two", HOOKS).read(0, sum(checkpoint["rows"]))
    for parts in batches[4:7]:                               # more shards, then killed (no flush)
        for w, rows in zip(writers, parts):
            w.append(rows)
    assert all(len(w.shards) > 1 for w in writers)
    (tmp_path / "two" / "process_00001" / "layers.0" / "shard_00009.npy.tmp").write_bytes(b"partial")
    reader = CacheReader(tmp_path / "two", HOOKS)
    assert reader.rows == sum(checkpoint["rows"])
    np.testing.assert_array_equal(reader.read(0, reader.rows), at_checkpoint)

    writers = _two_writers(tmp_path / "two")                 # --resume
    for w in reversed(writers):
        w.restore(checkpoint)
    for w in writers:
        listed = len(w.shards)
        files = sorted((tmp_path / "two" / cache_mod.writer_dir(w.process) / "layers.0").glob("shard_*.npy"))
        assert len(files) == listed                         # shards after the checkpoint deleted
    for parts in batches[4:]:
        for w, rows in zip(writers, parts):
            w.append(rows)
    for w in reversed(writers):
        w.flush()
    want = CacheReader(tmp_path / "one", HOOKS)
    got = CacheReader(tmp_path / "two", HOOKS)
    assert got.rows == want.rows
    np.testing.assert_array_equal(got.read(0, got.rows), want.read(0, want.rows))
    with pytest.raises(UserError, match="covers 1 process"):
        writers[1].restore({"rows": [3], "chunks": [1]})


def test_refusals_and_format_1(tmp_path):
    writers = _two_writers(tmp_path / "two")
    for w, rows in zip(writers, _batches(2, 1)[0]):
        w.append(rows)
    for w in reversed(writers):
        w.flush()
    with pytest.raises(UserError, match=r"written by process 0 \(batch rows \[0, 4\)\), process 1 .*this run writes "
                                        r"from process 0 \(batch rows \[0, 8\)\)"):
        CacheWriter(tmp_path / "two", HOOKS, 3, np.float32, shard_rows=5, batch_rows=(0, 8))
    (tmp_path / "two" / "process_00001" / "layers.0" / "shard_00000.npy").unlink()
    with pytest.raises(UserError, match="is missing: every process needs the whole cache.dir"):
        CacheReader(tmp_path / "two", HOOKS).read(0, 20)

    old = tmp_path / "format1"                       # written by the one-process version
    rows = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    for h, hook in enumerate(HOOKS):
        (old / hook).mkdir(parents=True)
        np.save(old / hook / "shard_00000.npy", rows[h, :3])
        np.save(old / hook / "shard_00001.npy", rows[h, 3:])
    (old / "manifest.json").write_text(json.dumps({"format": 1, "hooks": HOOKS, "d": 3, "dtype": "float32",
                                                   "shards": [3, 2], "rows": 5, "model": "tiny"}))
    np.testing.assert_array_equal(CacheReader(old, HOOKS).read(0, 5), rows)
    with pytest.raises(UserError, match="format 1 .* can be read .* but not extended"):
        CacheWriter(old, HOOKS, 3, np.float32, shard_rows=5)
    (old / "manifest.json").write_text(json.dumps({"format": 3, "hooks": HOOKS}))
    with pytest.raises(UserError, match="has format 3; this version reads formats 1, 2"):
        CacheReader(old, HOOKS)


def test_a_process_whose_rows_another_writes_keeps_nothing(tmp_path):
    """'model' axis across two processes: both hold every row, process 0 writes them, process 1 only takes part
    in the collectives (here called in order by hand)."""
    layout = {0: (0, 8)}
    w0, w1 = (CacheWriter(tmp_path, HOOKS, 3, np.float32, shard_rows=5, process=p, batch_rows=(0, 8), writers=layout)
              for p in (0, 1))
    assert (w0.active, w1.active) == (True, False)
    rows = np.ones((2, 7, 3), np.float32)
    for w in (w1, w0):
        w.append(rows)
        w.flush()
    assert w1.checkpoint_state() == {"rows": [0], "chunks": [0]} and w0.checkpoint_state()["rows"] == [7]
    w1.restore({"rows": [7, 0], "chunks": [1, 0]})
    assert not (tmp_path / "process_00001").exists()
    assert [w["process"] for w in json.loads((tmp_path / "manifest.json").read_text())["writers"]] == [0]
    assert CacheReader(tmp_path, HOOKS).rows == 7


def test_writers_of_a_mesh():
    """One writer per distinct block of batch rows (the lowest process holding it); on one process: itself."""
    import jax

    from qwen_sae_jax.train.config import MeshConfig
    from qwen_sae_jax.train.mesh import make_mesh

    assert cache_mod._writers({0: (0, 4), 1: (4, 8)}) == {0: (0, 4), 1: (4, 8)}
    assert cache_mod._writers({0: (0, 8), 1: (0, 8)}) == {0: (0, 8)}      # 'model' axis across the processes
    assert cache_mod._writers({0: (4, 8), 1: (0, 4), 2: (4, 8), 3: (0, 4)}) == {0: (4, 8), 1: (0, 4)}
    with pytest.raises(UserError, match="overlap without being equal"):
        cache_mod._writers({0: (0, 4), 1: (2, 6)})
    mesh = make_mesh(MeshConfig(data=4, model=2))
    assert jax.process_count() == 1 and mesh.devices.size == 8
    w = CacheWriter.for_mesh("unused", HOOKS, 3, np.float32, 5, "tiny", mesh=mesh, batch_size=8)
    assert (w.process, w.batch_rows, w.writers, w.active) == (0, (0, 8), {0: (0, 8)}, True)


def test_process_part_takes_each_row_block_once():
    """The host copy of this process's rows of an array sharded over 'data' (and replicated over 'model')."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from qwen_sae_jax.data.stream import _process_part
    from qwen_sae_jax.train.config import MeshConfig
    from qwen_sae_jax.train.mesh import make_mesh

    mesh = make_mesh(MeshConfig(data=4, model=2))
    x = np.arange(2 * 16 * 3, dtype=np.float32).reshape(2, 16, 3)          # [H, rows, D]
    arr = jax.device_put(x, NamedSharding(mesh, P(None, "data")))
    np.testing.assert_array_equal(_process_part(arr, axis=1), x)
    keep = jax.device_put(np.arange(16) % 3 == 0, NamedSharding(mesh, P("data")))
    np.testing.assert_array_equal(_process_part(keep, axis=0), np.arange(16) % 3 == 0)
