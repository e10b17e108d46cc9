"""Documents from local files (txt / jsonl / json) and HF datasets; clear errors for bad sources."""
import json

import pytest

from qwen_sae_jax.data.text import TextSourceConfig, open_documents
from qwen_sae_jax.errors import UserError


def test_plain_text_units(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\n\n\nthree\n")
    (tmp_path / "b.txt").write_text("four\n")
    pattern = str(tmp_path / "*.txt")
    assert open_documents(TextSourceConfig(files=[pattern], text_unit="line")) == ["one", "two", "three", "four"]
    assert open_documents(TextSourceConfig(files=[pattern])) == ["one\ntwo", "three", "four"]
    assert open_documents(TextSourceConfig(files=[pattern], text_unit="document")) == ["one\ntwo\n\n\nthree\n",
                                                                                      "four\n"]


def test_jsonl_and_json_columns(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"body": "x y"}) + "\n\n" + json.dumps({"body": "z"}) + "\n")
    (tmp_path / "e.json").write_text(json.dumps([{"body": "w"}, "plain"]))
    docs = open_documents(TextSourceConfig(files=[str(tmp_path / "d.jsonl"), str(tmp_path / "e.json")],
                                           text_column="body"))
    assert docs == ["x y", "z", "w", "plain"]


def test_bad_sources(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"txt": "a"}) + "\n")
    with pytest.raises(UserError, match=r"no text column 'text' \(did you mean 'txt'\?\); columns: txt"):
        open_documents(TextSourceConfig(files=[str(tmp_path / "d.jsonl")]))
    with pytest.raises(UserError, match="matches no file"):
        open_documents(TextSourceConfig(files=[str(tmp_path / "missing*.txt")]))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(UserError, match="holds no documents"):
        open_documents(TextSourceConfig(files=[str(tmp_path / "empty.txt")]))
    with pytest.raises(UserError, match="no text source"):
        open_documents(TextSourceConfig())
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match=r"bad.jsonl:1: not valid JSON"):
        open_documents(TextSourceConfig(files=[str(tmp_path / "bad.jsonl")]))


def test_hf_datasets_reads_local_files_lazily(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"content": f"doc {i}", "n": i} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = open_documents(TextSourceConfig(dataset="json", files=[str(tmp_path / "d.jsonl")], text_column="content"))
    assert len(docs) == 5 and docs[3] == "doc 3"
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    docs = open_documents(TextSourceConfig(dataset="parquet", files=[str(tmp_path / "d.parquet")],
                                           text_column="content"))
    assert [docs[i] for i in range(5)] == [r["content"] for r in rows]
    with pytest.raises(UserError, match=r"no text column 'text'.*columns: content, n"):
        open_documents(TextSourceConfig(dataset="json", files=[str(tmp_path / "d.jsonl")]))
    # pyarrow comes with datasets: the direct parquet reader works too
    assert open_documents(TextSourceConfig(files=[str(tmp_path / "d.parquet")], text_column="content"))[0] == "doc 0"


@pytest.mark.parametrize("kind", ["dataset", "dataset_dict"])
def test_saved_dataset_directory(tmp_path, kind):
    """data.dataset = a folder written by `save_to_disk`: a Dataset, or a DatasetDict whose split is chosen."""
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_list([{"text": f"train {i}"} for i in range(4)])
    if kind == "dataset":
        train.save_to_disk(str(tmp_path / "saved"))
    else:
        test = datasets.Dataset.from_list([{"text": f"test {i}"} for i in range(3)])
        datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "saved"))
        docs = open_documents(TextSourceConfig(dataset=str(tmp_path / "saved"), split="test"))
        assert [docs[i] for i in range(len(docs))] == ["test 0", "test 1", "test 2"]
        with pytest.raises(UserError, match=r"has no split 'validation'; splits: train, test"):
            open_documents(TextSourceConfig(dataset=str(tmp_path / "saved"), split="validation"))
    docs = open_documents(TextSourceConfig(dataset=str(tmp_path / "saved"), split="train"))
    assert [docs[i] for i in range(len(docs))] == [f"train {i}" for i in range(4)]


@pytest.mark.parametrize("name", ["latin1.txt", "latin1.jsonl", "latin1.json"])
def test_a_file_that_is_not_utf8_is_named_with_its_first_bad_byte(tmp_path, name):
    body = {"latin1.txt": "caf\u00e9 au lait\n", "latin1.jsonl": '{"text": "caf\u00e9"}\n',
            "latin1.json": '["caf\u00e9"]'}[name]
    path = tmp_path / name
    path.write_bytes(body.encode("latin-1"))
    offset = body.index("\u00e9")
    with pytest.raises(UserError, match=rf"{name}: not UTF-8 text \(byte 0xe9 at offset {offset}\)"):
        open_documents(TextSourceConfig(files=[str(path)]))


def test_jsonl_lines_split_on_newlines_only(tmp_path):
    # U+2028 is legal inside a JSON string; a line iterator that splits on it would break the document
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "a\u2028b"}, ensure_ascii=False) + "\r\n", encoding="utf-8")
    assert open_documents(TextSourceConfig(files=[str(tmp_path / "d.jsonl")])) == ["a\u2028b"]
