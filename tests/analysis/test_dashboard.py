"""The dashboard: built by the CLI on a run directory, validated structurally (HTML, JSON, provenance of every
example), then rendered in headless Chromium when it is installed."""
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from qwen_sae_jax.cli import main

VOID = {"meta", "link", "input", "br", "img", "hr", "source", "area", "base", "col", "embed", "track", "wbr"}


@pytest.fixture(scope="module")
def dashboard(run_dir, corpus_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("dash") / "dash"
    code = main(["dashboard", str(run_dir), "--out", str(out), "--files", corpus_file, "--text-unit", "line",
                 "--max-tokens", "500", "--ctx-len", "24", "--n-examples", "4", "--left", "5", "--right", "2",
                 "--lens-k", "3", "--chunk", "16"])
    assert code == 0
    return out


def load_pair(path: Path):
    """The .json file and its .js twin, checked to carry the same data."""
    data = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    js = path.with_suffix(".js").read_text(encoding="utf-8")
    m = re.fullmatch(r'QSD_LOAD\(("[^"]*"),(.*)\);\n', js, re.S)
    assert m, f"{path}.js is not a QSD_LOAD(...) wrapper"
    assert json.loads(m.group(2)) == data
    return json.loads(m.group(1)), data


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.refs = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.refs += [attrs[a] for a in ("src", "href") if a in attrs]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def test_html_is_well_formed_and_offline(dashboard):
    pages = sorted(dashboard.glob("*.html"))
    assert [p.name for p in pages] == ["index.html", "layers.0.mlp__relu.html", "layers.1__topk.html"]
    for page in pages:
        parser = Page()
        parser.feed(page.read_text(encoding="utf-8"))
        assert parser.stack == [], f"{page.name}: unclosed {parser.stack}"
        for ref in parser.refs:
            assert not re.match(r"^([a-z]+:)?//", ref), f"{page.name} loads a network resource {ref}"
            assert (dashboard / ref).is_file(), f"{page.name} refers to missing {ref}"
    js = (dashboard / "assets" / "dashboard.js").read_text()
    assert "fetch(" not in js and "XMLHttpRequest" not in js
    assert set(re.findall(r"https?://[^\s\"']+", js)) == {"http://www.w3.org/2000/svg"}   # an XML namespace
    assert "http" not in (dashboard / "assets" / "dashboard.css").read_text()


def test_json_data_are_complete_and_examples_point_at_the_corpus(dashboard, tiny_lm, run_dir, corpus_file):
    from qwen_sae_jax.analysis.corpus import read_texts
    from qwen_sae_jax.interop.load import load_saes

    saes = load_saes(run_dir)
    docs = read_texts(corpus_file, text_unit="line")
    _, vocab = load_pair(dashboard / "data" / "vocab")
    key, index = load_pair(dashboard / "data" / "index")
    assert key == "index" and [s["name"] for s in index["saes"]] == list(saes)
    assert 490 <= index["n_tokens"] <= 500             # the budget, less a last piece too short to keep
    meta = json.loads((dashboard / "dashboard.json").read_text())
    assert meta["config"]["n_examples"] == 4 and meta["saes"] == list(saes)
    for row in index["saes"]:
        sae = saes[row["name"]]
        slug = row["page"][:-len(".html")]
        _, summary = load_pair(dashboard / "data" / slug / "summary")
        F = sae.cfg.d_sae
        assert summary["d_sae"] == F and summary["hook"] == sae.cfg.hook_name
        assert all(len(summary["features"][k]) == F for k in ("count", "density", "mean", "max", "keys"))
        n_tokens = summary["n_tokens"]
        if sae.cfg.architecture == "topk":                 # exactly k features fire at every counted token
            assert sum(summary["features"]["count"]) == sae.cfg.k * n_tokens
        assert summary["dead"] == sum(c == 0 for c in summary["features"]["count"])
        seen = []
        for chunk in sorted((dashboard / "data" / slug).glob("features_*.json")):
            _, part = load_pair(chunk)
            start = part["start"]
            assert [f["id"] for f in part["features"]] == list(range(start, start + len(part["features"])))
            for feat in part["features"]:
                seen.append(feat["id"])
                count = summary["features"]["count"][feat["id"]]
                assert sum(feat["hist"]["counts"]) == count
                assert len(feat["examples"]) == min(count, 4)
                values = [e["v"] for e in feat["examples"]]
                assert values == sorted(values, reverse=True)
                assert all(str(i) in vocab for i, _ in feat["lens"]["pos"] + feat["lens"]["neg"])
                for e in feat["examples"]:
                    assert e["act"][5] == pytest.approx(e["v"], rel=5e-3)  # acts keep 3 digits
                    ids = tiny_lm.tokenizer(docs[e["doc"]], add_special_tokens=False)["input_ids"]
                    assert e["tok"][5] == ids[e["pos"]]     # the example token is where the JSON says
                    assert all(t == -1 or str(t) in vocab for t in e["tok"])
        assert seen == list(range(F))


def chromium_dom(url: str, tmp_path: Path) -> str:
    out = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=10000", "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian `chromium` is not installed (apt-get install chromium); the structural HTML/JSON "
                           "checks in this file still run")
def test_pages_render_in_headless_chromium(dashboard, tmp_path):
    _, summary = load_pair(dashboard / "data" / "layers.1__topk" / "summary")
    counts = summary["features"]["count"]
    feature = max(range(len(counts)), key=lambda f: counts[f])
    _, part = load_pair(dashboard / "data" / "layers.1__topk" / f"features_{feature // 16:04d}")
    n_examples = len(part["features"][feature % 16]["examples"])

    dom = chromium_dom((dashboard / "layers.1__topk.html").as_uri() + f"#f={feature}", tmp_path)
    assert 'data-ready="1"' in dom and "data-error" not in dom, dom[-3000:]
    assert f'data-feature="{feature}"' in dom.split("<main>")[0]          # the feature panel was rendered
    panel = dom[dom.index('id="feature"'):]
    assert f"Feature {feature}" in panel
    assert panel.count('class="example"') == n_examples
    assert panel.count('class="tok center"') == n_examples
    assert "Logit lens" in panel and "<svg" in panel
    assert dom.count('class="row') == sum(c > 0 for c in counts)           # all fired features, one page

    token = summary["features"]["keys"][feature].split()[0]
    dom = chromium_dom((dashboard / "layers.1__topk.html").as_uri() + f"#q={token}", tmp_path)
    rows = re.findall(r'<tr class="row[^"]*" data-feature="(\d+)"', dom)
    assert rows and all(token.lower() in summary["features"]["keys"][int(r)].lower() for r in rows)

    dom = chromium_dom((dashboard / "layers.1__topk.html").as_uri() + "#f=999", tmp_path)
    assert "No feature 999 (0..47)" in dom and "data-error" not in dom

    dom = chromium_dom((dashboard / "index.html").as_uri(), tmp_path)
    assert 'data-ready="1"' in dom and "data-error" not in dom
    assert dom.count('class="sae"') == 2 and 'href="layers.1__topk.html"' in dom


def test_bad_input(run_dir, corpus_file, tmp_path, capsys):
    base = ["dashboard", str(run_dir), "--files", corpus_file, "--max-tokens", "50"]
    assert main(base + ["--out", str(tmp_path / "d"), "--saes", "layers.3"]) == 2
    assert "no SAE for 'layers.3'" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert main(base + ["--out", str(tmp_path / "taken")]) == 2
    assert "is not a dashboard" in capsys.readouterr().err
    assert main(["dashboard", str(run_dir / "saes" / "layers.1__topk"), "--out", str(tmp_path / "d")]) == 2
    assert "pass --files" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["dashboard", str(run_dir), "--out", str(tmp_path / "d"), "--files", str(empty)]) == 2
    assert "no documents" in capsys.readouterr().err
