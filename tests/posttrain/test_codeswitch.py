"""`posttrain.codeswitch` and `qwen-sae codeswitch`: the script detector, the rates against a plain reference, the
default prompts, the CLI end to end on the embedded tiny model, one-line errors."""
import json

import numpy as np
import pytest

from qwen_sae_jax.cli import main
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.posttrain import codeswitch as cs


def _is_cjk(c: str) -> bool:
    return 0x3400 <= ord(c) <= 0x4DBF or 0x4E00 <= ord(c) <= 0x9FFF


def _is_latin(c: str) -> bool:
    return (c.isascii() and c.isalpha()) or (0xC0 <= ord(c) <= 0x24F and c not in "×÷")


def reference(texts, tokens, language, foreign_ids):
    """Plain loops: (rate, token share, char share, wrong-language share, switched flags)."""
    foreign = _is_cjk if language == "en" else _is_latin
    flags, f_tok, n_tok, f_chr, n_chr, wrong = [], 0, 0, 0, 0, 0
    for text, ids in zip(texts, tokens):
        k = sum(foreign(c) for c in text)
        cjk, latin = sum(_is_cjk(c) for c in text), sum(c.isascii() and c.isalpha() for c in text)
        flags.append(k > 0)
        f_chr, n_chr = f_chr + k, n_chr + sum(_is_cjk(c) or _is_latin(c) for c in text)
        f_tok, n_tok = f_tok + sum(t in foreign_ids for t in ids), n_tok + len(ids)
        mostly_zh = cjk > 0 and cjk >= latin
        if cjk + latin and (mostly_zh if language == "en" else not mostly_zh):
            wrong += 1
    n = len(texts)
    return sum(flags) / n, f_tok / n_tok, f_chr / max(n_chr, 1), wrong / n, flags


def test_detector_on_mixed_strings():
    assert cs.switches("Sure! 你好 means hello.", "en") and not cs.switches("Sure, a café costs 3 €.", "en")
    assert cs.switches("你好，café。", "zh") and cs.switches("我喜欢Python。", "zh")
    assert not cs.switches("你好，2024年。“！”", "zh")             # digits and CJK punctuation are no Latin letters
    assert not cs.switches("Hello 123, ！。", "en")                # full-width punctuation is no ideograph
    assert cs.foreign_chars("ab 你好 c 世", "en") == 3 and cs.foreign_chars("ab 你好 cé 世", "zh") == 4
    assert cs.letters("ab 你好, 1 É") == 5
    assert cs.reply_language("Hello 你好世界") == "en"              # 5 Latin > 4 CJK
    assert cs.reply_language("ab 你好") == "zh"                     # ties go to zh (detect_language)
    assert cs.reply_language("123 ，。!") is None
    with pytest.raises(UserError, match="unknown language 'fr'"):
        cs.switches("x", "fr")


REPLIES = ["Sure! The capital is Paris.", "Sure! 你好 means hello.", "我喜欢猫和狗。", "Of course: 猫 狗 河 山 水 火",
           "", "Sure, 1 2 3!", "Voilà, un café crème.", "书 book 书"]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_rates_against_reference(language):
    rng = np.random.default_rng(0 if language == "en" else 1)
    foreign_ids = {3, 5, 8, 13}
    tokens = [rng.integers(0, 16, size=rng.integers(1, 9)).tolist() for _ in REPLIES]
    replies = [cs.score_reply(t, ids, language, foreign_ids, prompt=i // 2, sample=i % 2, seed=7 + i % 2)
               for i, (t, ids) in enumerate(zip(REPLIES, tokens))]
    result = cs.CodeSwitchResult(language, [f"p{i}" for i in range(4)], replies, {"greedy": False, "samples": 2})
    rate, tok, chars, wrong, flags = reference(REPLIES, tokens, language, foreign_ids)
    assert [r.switched for r in replies] == flags and 0 < rate < 1
    assert result.rate == pytest.approx(rate) and result.token_share == pytest.approx(tok)
    assert result.char_share == pytest.approx(chars) and result.wrong_language == pytest.approx(wrong)
    per = result.per_prompt()
    assert [p["switched"] for p in per] == pytest.approx([np.mean(flags[2 * i:2 * i + 2]) for i in range(4)])
    assert [len(p["replies"]) for p in per] == [2] * 4
    examples = result.examples(2)
    first = [i for i, f in enumerate(flags) if f][:2]
    assert [e["reply"] for e in examples] == [REPLIES[i] for i in first]
    assert [e["prompt"] for e in examples] == [f"p{i // 2}" for i in first]


def test_foreign_token_ids_on_tiny_tokenizer():
    from transformers import AutoTokenizer

    from qwen_sae_jax.lm import TINY_DIR

    tok = AutoTokenizer.from_pretrained(TINY_DIR)
    latin = set(cs.foreign_token_ids(tok, "zh").tolist())
    special = set(tok.all_special_ids)
    for i in range(len(tok)):
        if i in special:
            continue
        assert (i in latin) == any(_is_latin(c) for c in tok.decode([i])), (i, tok.decode([i]))
    zh = set(cs.foreign_token_ids(tok, "en").tolist())
    assert tok.convert_tokens_to_ids("Ġthe") in latin and tok.convert_tokens_to_ids("Ġthe") not in zh
    assert len(zh) > 100 and sum(any(_is_cjk(c) for c in tok.decode([i])) for i in zh) > 0.5 * len(zh)


def test_default_prompts():
    from qwen_sae_jax.tinymodel import heldout_prompt_records, heldout_texts

    en = cs.default_prompts("en")
    records = heldout_prompt_records("harmless")
    assert len(en) == 140 and not [r for r in records if r["prompt"] in en and r["category"] == "translation"]
    zh = cs.default_prompts("zh")
    docs = heldout_texts("chinese")
    rows = [json.loads(line) for line in cs.ZH_PROMPTS.read_text(encoding="utf-8").splitlines()]
    assert rows == cs.build_chinese_prompts(docs)                   # the committed file is rebuilt exactly
    assert len(zh) == 120 == len({r["doc"] for r in rows}) and [r["prompt"] for r in rows] == zh
    assert all(r["topic"] in docs[r["doc"]] and not cs.LATIN.search(r["prompt"]) for r in rows)


def _run(capsys, *argv):
    try:
        code = main(["codeswitch", *argv])
    except SystemExit as exit:                      # argparse's own errors
        code = exit.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_end_to_end(tmp_path, capsys):
    from qwen_sae_jax.lm import load_model

    prompts = ["What is the capital of France?", "How do you say 'water' in Chinese?", "Sort 3, 1, 2."]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"q": p}) + "\n" for p in prompts))
    code, out, err = _run(capsys, "--model", "tiny", "--prompts", str(tmp_path / "p.jsonl"), "--column", "q",
                          "--samples", "2", "--temperature", "1", "--max-new-tokens", "8", "--batch-size", "2",
                          "--seed", "5", "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert "generation 4/4 batches (100%)" in err and "ETA" in err
    data = json.loads((tmp_path / "o" / "codeswitch.json").read_text())
    assert data["n_replies"] == 6 and [p["prompt"] for p in data["per_prompt"]] == prompts
    replies = [r for p in data["per_prompt"] for r in p["replies"]]
    assert [r["seed"] for r in data["per_prompt"][0]["replies"]] == [5, 6]
    rate, _, chars, _, flags = reference([r["text"] for r in replies], [[0] * r["tokens"] for r in replies], "en", ())
    assert [r["switched"] for r in replies] == flags
    assert data["rate"] == pytest.approx(rate) and data["char_share"] == pytest.approx(chars)
    assert out.strip().splitlines()[-1] == (f"codeswitch: language=en rate={data['rate']:.4f} "
                                            f"token_share={data['token_share']:.4f} n=6")
    # sample i, first batch: what lm.generate gives with seed + i
    lm = load_model("tiny")
    for sample in (0, 1):
        expected = lm.generate(prompts[:2], max_new_tokens=8, temperature=1.0, seed=5 + sample)
        assert [p["replies"][sample]["text"] for p in data["per_prompt"][:2]] == expected
    # the Chinese direction, greedy, default prompts: one batch = lm.generate
    code, out, err = _run(capsys, "--model", "tiny", "--language", "zh", "--limit", "3", "--max-new-tokens", "6",
                          "--out", str(tmp_path / "o"))
    assert code == 0, err
    data = json.loads((tmp_path / "o" / "codeswitch.json").read_text())
    texts = [p["replies"][0]["text"] for p in data["per_prompt"]]
    assert texts == lm.generate(cs.default_prompts("zh")[:3], max_new_tokens=6)
    assert data["rate"] == pytest.approx(np.mean([any(_is_latin(c) for c in t) for t in texts]))
    assert data["greedy"] and data["language"] == "zh" and "zh        en     greedy" in out


@pytest.mark.parametrize("argv, message", [
    (["--language", "fr"], "unknown language 'fr'"),
    (["--prompts", "EMPTY"], "is empty"),
    (["--prompts", "ROWS", "--column", "text"], "no field 'text'"),
    (["--samples", "0"], "argument --samples: expected an integer >= 1, got 0"),
    (["--max-new-tokens", "0"], "argument --max-new-tokens: expected an integer >= 1, got 0"),
    (["--temperature", "0.7"], "--temperature applies to sampled replies: add --samples N"),
    (["--samples", "2", "--temperature", "0"], "--temperature must be > 0 with --samples"),
    (["--greedy", "--samples", "2"], "not allowed with argument"),
    (["--out", "FILE"], "is a file, not a folder"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    (tmp_path / "file").write_text("x")
    paths = {"EMPTY": tmp_path / "empty.jsonl", "ROWS": tmp_path / "rows.jsonl", "FILE": tmp_path / "file"}
    argv = [str(paths.get(a, a)) for a in argv]
    code, out, err = _run(capsys, "--model", "tiny", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("qwen-sae codeswitch: error: ")


def test_measure_checks_settings():
    for kwargs, message in (({"samples": 0}, "samples must be"), ({"max_new_tokens": 0}, "max_new_tokens must"),
                            ({"samples": 2}, "greedy decoding"), ({"top_p": 0.0, "temperature": 1.0}, "top_p")):
        with pytest.raises(UserError, match=message):
            cs.measure(None, ["hi"], "en", **kwargs)


def test_help_documents_every_option(capsys):
    from qwen_sae_jax.cli import build_parser

    parser = build_parser(only="codeswitch")
    sub = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("codeswitch"))
    options = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 15 and all(a.help and len(a.help) > 10 for a in options)
    with pytest.raises(SystemExit):
        main(["codeswitch", "--help"])
    text = capsys.readouterr().out
    assert all(a.option_strings[0] in text for a in options) and "codeswitch: language=L" in text
