"""The activation cache on two processes, through the real `qwen-sae train` CLI: each process writes its own
shards (one manifest), a resumed run truncates each process's shards to its checkpoint, and the cache holds
the rows one process writes, in the same order; read back with two processes and with one, it trains the
same SAEs."""
import json
import shutil

import numpy as np
import pytest

from qwen_sae_jax.data.cache import CacheReader
from tests.train.test_processes import _assert_same_run, _start, _write

pytestmark = pytest.mark.slow

HOOKS = ["layers.0.mlp", "layers.1"]
COMMON = ("train.total_tokens=1024", "checkpoint.every=4", "checkpoint.keep=10", "log.every=4", "eval.tokens=128",
          "cache.shard_rows=100")


def _run(procs) -> list[str]:
    """Wait for the processes; their stderr (each exited 0)."""
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [err for _, err in outs]


def test_two_processes_write_their_shards_and_read_them_back(make_config, tmp_path, _compilation_cache):
    from qwen_sae_jax.train.checkpoint import Checkpoints
    from qwen_sae_jax.train.loop import train

    one, two = tmp_path / "cache-one", tmp_path / "cache-two"
    train(make_config(*COMMON, "mesh.data=2", "cache.mode=write", f"cache.dir={one}", run="write-one"))

    # two processes of one device each (mesh data=2 across them): each writes the rows of its half of every batch
    config = _write(make_config(*COMMON, "cache.mode=write", f"cache.dir={two}", run="write-two"),
                    tmp_path / "write-two.yaml")
    errs = _run(_start(config, 1, _compilation_cache))
    assert "mesh data=2 model=1, 2 process(es)" in errs[0]
    complete = CacheReader(two, HOOKS)
    rows_done = complete.read(0, complete.rows)
    # as if killed after the step-4 checkpoint while writing later shards: --resume truncates each process's
    # shards to what the checkpoint recorded and writes the rest again
    checkpoints = tmp_path / "write-two" / "checkpoints"
    assert sorted(int(p.name) for p in checkpoints.iterdir()) == [4, 8]
    meta = Checkpoints(checkpoints, 10, False).read_meta(4)
    assert len(meta["cache_rows"]["rows"]) == 2 and meta["cache_rows"]["chunks"][0] == meta["cache_rows"]["chunks"][1]
    shutil.rmtree(checkpoints / "8")
    assert sum(meta["cache_rows"]["rows"]) < complete.rows
    errs = _run(_start(config, 1, _compilation_cache, "--resume"))
    assert "from step 4" in errs[0]

    manifest = json.loads((two / "manifest.json").read_text())
    assert [(w["dir"], w["batch_rows"]) for w in manifest["writers"]] == [("process_00000", [0, 4]),
                                                                        ("process_00001", [4, 8])]
    for w in manifest["writers"]:
        assert w["rows"] > 0 and len(list((two / w["dir"] / "layers.1").glob("shard_*.npy"))) == len(w["shards"])
    want = json.loads((one / "manifest.json").read_text())
    # chunk c (token batch c) of the one-process cache = chunk c of process 0 + chunk c of process 1
    assert want["writers"][0]["chunks"] == [a + b for a, b in zip(*(w["chunks"] for w in manifest["writers"]))]
    reference, written = CacheReader(one, HOOKS), CacheReader(two, HOOKS)
    assert written.rows == reference.rows
    np.testing.assert_allclose(written.read(0, written.rows), reference.read(0, reference.rows), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(written.read(0, written.rows), rows_done)     # resumed = uninterrupted

    # read back: two processes (each reading the rows of its half of every batch) and one process train alike
    read = ("checkpoint.every=0", "cache.mode=read", f"cache.dir={two}")
    train(make_config(*read, "mesh.data=2", run="read-one"))
    _run(_start(_write(make_config(*read, run="read-two"), tmp_path / "read-two.yaml"), 1, _compilation_cache))
    _assert_same_run(tmp_path / "read-one", tmp_path / "read-two")
