from qwen_sae_jax.tinymodel import corpus


def test_fortune_parsing_strips_ansi(tmp_path):
    path = tmp_path / "f"
    path.write_text("\x1b[32m《静夜思》\x1b[m\n床前明月光\n%\nsecond one\n%\n")
    assert corpus._fortunes(path) == ["《静夜思》\n床前明月光", "second one"]


def test_split_is_deterministic_disjoint_and_complete():
    docs = [f"doc {i} " * (i % 7 + 1) for i in range(500)]
    a = corpus.split_documents("x", docs, seed=3, heldout_chars=500)
    b = corpus.split_documents("x", docs, seed=3, heldout_chars=500)
    c = corpus.split_documents("x", docs, seed=4, heldout_chars=500)
    assert a == b and a.heldout != c.heldout
    assert sorted(a.train + a.heldout) == sorted(docs)
    assert not set(a.train) & set(a.heldout)
    assert 500 <= sum(map(len, a.heldout)) < 600


def test_pieces_cut_at_lines():
    text = "".join(f"line {i}\n" for i in range(1000))
    pieces = corpus._pieces(text, size=100)
    assert "".join(pieces) == text
    assert all(p.endswith("\n") for p in pieces) and max(map(len, pieces)) < 110
