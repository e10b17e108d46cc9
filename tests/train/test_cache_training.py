"""Writing the activation cache while training, then training from it without the model."""
import json

import numpy as np

from qwen_sae_jax.data.cache import CacheReader
from qwen_sae_jax.train.loop import train


def test_write_then_train_from_cache(make_config, tmp_path):
    cache = tmp_path / "cache"
    written = train(make_config("cache.mode=write", f"cache.dir={cache}", "cache.shard_rows=500", run="write"))
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["hooks"] == ["layers.0.mlp", "layers.1"] and manifest["d"] == 64
    kept = json.loads((written.run_dir / "summary.json").read_text())["dropped"]["kept"]
    assert manifest["rows"] == kept               # every kept activation, nothing else
    rows = CacheReader(cache, ["layers.1"]).read(0, manifest["rows"])[0]
    assert np.isfinite(rows).all() and manifest["shards"][0] == 500
    from_cache = train(make_config("cache.mode=read", f"cache.dir={cache}", run="read"))
    summary = json.loads((from_cache.run_dir / "summary.json").read_text())
    assert summary["eval_source"] == "training stream"
    assert all(0 < row["fvu"] < 1 for row in summary["saes"].values())
