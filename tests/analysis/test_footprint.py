"""Per-text footprints against lm.capture + sae.encode text by text; corpus readers' errors."""
import numpy as np
import pytest

from qwen_sae_jax.analysis.corpus import corpus_windows, read_texts
from qwen_sae_jax.errors import UserError

from .conftest import make_sae


def test_footprints_match_text_by_text_encoding(tiny_lm):
    from qwen_sae_jax.analysis.collect import special_ids_of
    from qwen_sae_jax.analysis.footprint import text_footprints

    sae = make_sae(tiny_lm, "relu", hook="layers.0.mlp", d_sae=40, seed=2)
    texts = ["the cat sat", "猫 狗 河 山 水 and a much longer text " * 4, "x", "def return import class"]
    fp = text_footprints(tiny_lm, sae, texts, max_len=40, batch_size=3, threshold=0.05)
    assert fp.fired.shape == (4, 40) and fp.truncated == 1
    special = set(special_ids_of(tiny_lm))
    for i, text in enumerate(texts):
        ids = tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"][:40]
        acts = tiny_lm.capture(np.asarray([ids], np.int32), ["layers.0.mlp"])["layers.0.mlp"]
        z = np.asarray(sae.encode(acts))[0]                                      # [T, F]
        keep = np.array([j > 0 and t not in special for j, t in enumerate(ids)])
        np.testing.assert_array_equal(fp.fired[i], (z[keep] > 0.05).any(axis=0))
        assert fp.n_positions[i] == keep.sum()
    assert not fp.fired[2].any()                                                 # one token: first, excluded


def test_corpus_windows_and_readers(tmp_path, tiny_lm):
    tok = tiny_lm.tokenizer
    w = corpus_windows(tok, ["abcdefghij", "xy", "z"], ctx_len=4, max_tokens=100, pad_id=0)
    assert w.doc_index.tolist() == [0, 0, 0, 1] and w.doc_offset.tolist() == [0, 4, 8, 0]   # "z": 1 token, dropped
    assert w.attention_mask.sum(axis=1).tolist() == [4, 4, 2, 2]
    w = corpus_windows(tok, ["abcdefghij"], ctx_len=4, max_tokens=6, pad_id=0)
    assert w.num_tokens == 6

    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(UserError, match="is empty"):
        read_texts(str(empty))
    with pytest.raises(UserError, match="does not exist"):
        read_texts(str(tmp_path / "missing.txt"))
    lines = tmp_path / "lines.txt"
    lines.write_text("one\n\ntwo three\n")
    assert read_texts(str(lines)) == ["one", "two three"]
    with pytest.raises(UserError, match="no window"):
        corpus_windows(tok, ["a"], ctx_len=4, max_tokens=10, pad_id=0)
