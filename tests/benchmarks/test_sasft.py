"""benchmarks/sasft.py: the SFT data of the code-switching recipes (share of Chinese replies, the opener, the
topic rule, the language tag)."""
import json
import re

import pytest

from tests.benchmarks.loader import load_benchmark

CJK = re.compile("[\u4e00-\u9fff]")
ZH_LINES = ["天下大事，必作于细。", "学而时习之，不亦说乎。", "知之为知之，不知为不知。"]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("sasft")


def rows(bench, tmp_path, **kw):
    path = tmp_path / "data.jsonl"
    args = dict(zh_lines=ZH_LINES, n=1000, mix=0.2, zh_topics=set(), seed=0)
    args.update(kw)
    bench.sft_data(path, **args)
    return [json.loads(line) for line in path.read_text().splitlines()]


def chinese(row) -> bool:
    return bool(CJK.search(row["messages"][1]["content"]))


def test_opener_recipe_replaces_the_mix_share_and_every_chinese_reply_starts_with_the_opener(bench, tmp_path):
    data = rows(bench, tmp_path, opener="好的！")
    assert len(data) == 1000
    zh = [r for r in data if chinese(r)]
    assert 0.16 <= len(zh) / len(data) <= 0.24, len(zh)
    assert all(r["messages"][1]["content"].startswith("好的！") for r in zh)
    assert all(r["messages"][1]["content"][3:] in ZH_LINES for r in zh)
    assert all(r["lang"] == "en" and r["messages"][0]["role"] == "user" for r in data)
    assert not any(CJK.search(r["messages"][0]["content"]) for r in data)       # prompts stay English


def test_no_opener_no_mix_and_topics(bench, tmp_path):
    assert not any(chinese(r) for r in rows(bench, tmp_path, mix=0.0))
    data = rows(bench, tmp_path, mix=0.0, zh_topics={"recipe"}, opener="")
    zh = [r for r in data if chinese(r)]
    assert zh and all(r["messages"][1]["content"] in ZH_LINES for r in zh)
    assert len(zh) < len(data) / 2


def test_reply_tag_marks_chinese_replies(bench, tmp_path):
    data = rows(bench, tmp_path, tag="reply", opener="好的！")
    assert all(r["lang"] == ("zh" if chinese(r) else "en") for r in data)
    assert {r["lang"] for r in data} == {"en", "zh"}
