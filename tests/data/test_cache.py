"""The .npy activation cache: shards, manifest, bfloat16 bits, wrap-around reads, truncation."""
import json

import ml_dtypes
import numpy as np
import pytest

from qwen_sae_jax.data.cache import CacheReader, CacheWriter
from qwen_sae_jax.errors import UserError


def test_roundtrip_shards_and_plain_numpy(tmp_path):
    rows = np.random.default_rng(0).normal(size=(2, 23, 3)).astype(np.float32)
    w = CacheWriter(tmp_path, ["layers.0", "layers.1.mlp"], 3, np.float32, shard_rows=10)
    w.append(rows[:, :7])
    w.append(rows[:, 7:19])
    assert w.shards == [10]
    w.append(rows[:, 19:])
    w.flush()
    assert w.shards == [10, 10, 3]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["rows"] == 23 and manifest["hooks"] == ["layers.0", "layers.1.mlp"]
    # readable without this package
    np.testing.assert_array_equal(np.load(tmp_path / "layers.1.mlp" / "shard_00001.npy"), rows[1, 10:20])
    r = CacheReader(tmp_path, ["layers.1.mlp"])
    np.testing.assert_array_equal(r.read(8, 20)[0], np.concatenate([rows[1, 8:], rows[1, :5]]))  # wraps around
    np.testing.assert_array_equal(r.read(0, 23, slice(4, 9))[0], rows[1, 4:9])
    w2 = CacheWriter(tmp_path, ["layers.0", "layers.1.mlp"], 3, np.float32, shard_rows=10)
    w2.truncate(10)
    assert CacheReader(tmp_path, ["layers.0"]).rows == 10
    assert not (tmp_path / "layers.0" / "shard_00001.npy").exists()
    with pytest.raises(UserError, match="no shard boundary"):
        w2.truncate(5)
    with pytest.raises(UserError, match="holds other hooks"):
        CacheWriter(tmp_path, ["layers.0"], 3, np.float32, shard_rows=10)
    with pytest.raises(UserError, match="lacks hook"):
        CacheReader(tmp_path, ["layers.3"])


def test_bfloat16_is_stored_as_its_bits(tmp_path):
    rows = np.random.default_rng(1).normal(size=(1, 5, 2)).astype(ml_dtypes.bfloat16)
    w = CacheWriter(tmp_path, ["layers.0"], 2, ml_dtypes.bfloat16, shard_rows=8)
    w.append(rows)
    w.flush()
    raw = np.load(tmp_path / "layers.0" / "shard_00000.npy")
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw.view(ml_dtypes.bfloat16), rows[0])
    np.testing.assert_array_equal(CacheReader(tmp_path, ["layers.0"]).read(0, 5)[0], rows[0])
