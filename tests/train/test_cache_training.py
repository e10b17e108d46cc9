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
    assert np.isfinite(rows).all() and manifest["writers"][0]["shards"][0] == 500
    from_cache = train(make_config("cache.mode=read", f"cache.dir={cache}", run="read"))
    summary = json.loads((from_cache.run_dir / "summary.json").read_text())
    assert summary["eval_source"] == "training stream"
    assert all(0 < row["fvu"] < 1 for row in summary["saes"].values())


def test_cache_rows_are_the_captured_activations_at_the_kept_positions(make_config, tmp_path):
    """Row r of every hook in the cache is the activation `lm.capture` gives at the r-th kept position of the
    training token stream (in stream order: batch by batch, row-major), first positions and special tokens
    left out (the norm-outlier filter is off here, so which positions are kept does not depend on its state)."""
    from qwen_sae_jax.data.text import open_documents
    from qwen_sae_jax.data.tokens import TokenBatches, special_token_ids
    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.train.loop import _Every

    cache = tmp_path / "cache"
    cfg = make_config("cache.mode=write", f"cache.dir={cache}", "filter.norm_outlier_factor=null",
                      "train.total_tokens=512", "eval.tokens=128", run="write")
    train(cfg)
    hooks = ["layers.0.mlp", "layers.1"]
    reader = CacheReader(cache, hooks)
    cached = reader.read(0, reader.rows)                                    # [H, rows, D]
    lm = load_model(cfg.model.name)
    tokens = TokenBatches(lm.tokenizer, cfg.data, docs=_Every(open_documents(cfg.data), cfg.eval.holdout_every,
                                                              held_out=False))
    special = special_token_ids(lm.tokenizer)
    want = {h: [] for h in hooks}
    n = 0
    while n < reader.rows:
        ids = np.asarray(next(tokens))                                      # [8, 32]
        keep = ~np.isin(ids, special)
        keep[:, 0] = False
        acts = lm.capture(ids, hooks)
        for h in hooks:
            want[h].append(np.asarray(acts[h])[keep])
        n += int(keep.sum())
    assert n == reader.rows                      # the cache ends at a batch boundary: whole batches only
    for i, h in enumerate(hooks):
        np.testing.assert_allclose(cached[i], np.concatenate(want[h]), rtol=1e-5, atol=1e-5, err_msg=h)
