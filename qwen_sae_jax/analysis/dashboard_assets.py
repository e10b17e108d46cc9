"""The dashboard's static files: HTML templates, CSS and the plain-JavaScript viewer (no libraries, no
network). Data arrive as JSONP-style scripts ``QSD_LOAD("<key>", {...});`` next to the JSON files, because
browsers refuse ``fetch()`` of ``file://`` URLs while they do run ``<script src>`` from the same folder.

Page state lives in the URL hash: ``#f=<feature>&q=<search>&sort=<id|density|max>&page=<n>``.
"""
from __future__ import annotations

import html

CSS = """
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
header { padding: 10px 18px; background: #24292f; color: #fff; }
header a { color: #9cd1ff; }
header h1 { font-size: 18px; margin: 0 0 4px 0; }
header .meta { font-size: 12px; color: #c9d1d9; }
main { display: flex; gap: 14px; padding: 12px 18px; align-items: flex-start; }
#list { width: 430px; flex: none; }
#panel { flex: 1; min-width: 0; }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 12px; margin-bottom: 12px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #eaeef2; font-size: 13px; vertical-align: top; }
th { background: #f6f8fa; }
tr.row { cursor: pointer; }
tr.row:hover { background: #eef6ff; }
tr.row.selected { background: #dbeafe; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.controls { display: flex; gap: 6px; flex-wrap: wrap; margin-bottom: 8px; }
.controls input[type=search] { flex: 1; min-width: 140px; padding: 4px 6px; }
.pager { display: flex; justify-content: space-between; align-items: center; margin-top: 6px; font-size: 12px; }
.keys { color: #57606a; font-family: ui-monospace, monospace; font-size: 12px; overflow-wrap: anywhere; }
.example { font-family: ui-monospace, "SFMono-Regular", monospace; font-size: 13px; padding: 4px 0;
           border-bottom: 1px dashed #eaeef2; white-space: pre-wrap; overflow-wrap: anywhere; }
.example .val { display: inline-block; width: 64px; color: #57606a; text-align: right; margin-right: 8px; }
.example .src { color: #8c959f; font-size: 11px; margin-left: 8px; }
.tok { border-radius: 2px; }
.tok.center { outline: 2px solid #d1242f; font-weight: bold; }
.lens { display: flex; gap: 20px; }
.lens > div { flex: 1; }
.lens td.tokcell { font-family: ui-monospace, monospace; }
.pos { color: #1a7f37; } .neg { color: #cf222e; }
.stats span { margin-right: 16px; }
.muted { color: #8c959f; }
svg.hist rect { fill: #fb8c00; } svg.hist rect.dens { fill: #0969da; }
svg.hist text { font-size: 10px; fill: #57606a; }
#errors { color: #cf222e; white-space: pre-wrap; }
"""

JS = r"""
"use strict";
(function () {
  const store = {};
  const waiting = {};
  window.QSD_LOAD = function (key, data) { store[key] = data; (waiting[key] || []).forEach(f => f(data)); };
  window.addEventListener("error", ev => fail(ev.message || String(ev)));
  function fail(message) {
    const box = document.getElementById("errors");
    if (box) box.textContent += message + "\n";
    document.body.dataset.error = "1";
  }
  function load(path, key) {
    if (store[key] !== undefined) return Promise.resolve(store[key]);
    return new Promise((resolve, reject) => {
      (waiting[key] = waiting[key] || []).push(resolve);
      if (waiting[key].length > 1) return;
      const s = document.createElement("script");
      s.src = path;
      s.onerror = () => reject(new Error("cannot load " + path));
      document.head.appendChild(s);
    });
  }
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v; else if (k === "cls") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children || []) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    return node;
  }
  function fmt(x, digits) { return x === null || x === undefined ? "–" : Number(x).toPrecision(digits || 3); }
  function pct(x) { return x === 0 ? "0" : x < 1e-4 ? x.toExponential(1) : (100 * x).toPrecision(3) + "%"; }
  function visible(s) { return s === undefined ? "�" : s.replace(/\n/g, "⏎").replace(/\t/g, "⇥").replace(/\r/g, ""); }
  function hashState() {
    const out = {};
    for (const part of location.hash.replace(/^#/, "").split("&")) {
      if (!part) continue;
      const i = part.indexOf("=");
      out[decodeURIComponent(i < 0 ? part : part.slice(0, i))] = i < 0 ? "" : decodeURIComponent(part.slice(i + 1));
    }
    return out;
  }
  function setHash(update) {
    const st = Object.assign(hashState(), update);
    location.hash = Object.entries(st).filter(([, v]) => v !== "" && v !== undefined && v !== null)
      .map(([k, v]) => encodeURIComponent(k) + "=" + encodeURIComponent(v)).join("&");
  }
  function histogram(counts, edges, cls, labels) {
    const W = 360, H = 90, n = counts.length, max = Math.max(1, ...counts);
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "hist"); svg.setAttribute("width", W); svg.setAttribute("height", H + 16);
    counts.forEach((c, i) => {
      const r = document.createElementNS(svg.namespaceURI, "rect");
      const h = c ? Math.max(1, (H * c) / max) : 0;
      r.setAttribute("x", (i * W) / n); r.setAttribute("width", Math.max(1, W / n - 1));
      r.setAttribute("y", H - h); r.setAttribute("height", h);
      if (cls) r.setAttribute("class", cls);
      const t = document.createElementNS(svg.namespaceURI, "title");
      t.textContent = fmt(edges[i]) + " – " + fmt(edges[i + 1]) + ": " + c;
      r.appendChild(t); svg.appendChild(r);
    });
    [[0, "start", labels[0]], [W, "end", labels[1]]].forEach(([x, anchor, s]) => {
      const t = document.createElementNS(svg.namespaceURI, "text");
      t.setAttribute("x", x); t.setAttribute("y", H + 12); t.setAttribute("text-anchor", anchor);
      t.textContent = s; svg.appendChild(t);
    });
    return svg;
  }

  // ------------------------------------------------------------------ overview page
  function renderIndex(root) {
    return load("data/index.js", "index").then(idx => {
      document.title = idx.title;
      root.appendChild(el("header", {}, [el("h1", { text: idx.title }),
        el("div", { cls: "meta", text: idx.model + " · " + idx.n_tokens + " tokens of " + idx.corpus })]));
      const rows = idx.saes.map(s => el("tr", { cls: "sae" }, [
        el("td", {}, [el("a", { href: s.page, text: s.name })]), el("td", { text: s.hook }),
        el("td", { text: s.architecture + (s.k ? " k=" + s.k : "") }), el("td", { cls: "num", text: s.d_sae }),
        el("td", { cls: "num", text: fmt(s.l0) }), el("td", { cls: "num", text: pct(s.dead_fraction) }),
        el("td", { cls: "num", text: s.fvu === undefined ? "–" : fmt(s.fvu) }),
        el("td", {}, [histogram(s.density_hist.counts, s.density_hist.edges, "dens",
                                ["1e" + s.density_hist.edges[0], "1"])])]));
      const head = ["SAE", "hook", "architecture", "d_sae", "L0 (corpus)", "never fired", "FVU", "log10 density"]
        .map(h => el("th", { text: h }));
      root.appendChild(el("main", {}, [el("div", { cls: "card", id: "saes" },
        [el("table", {}, [el("thead", {}, [el("tr", {}, head)]), el("tbody", {}, rows)])])]));
    });
  }

  // ------------------------------------------------------------------ SAE page
  const PAGE = 100;
  function renderSae(root, slug) {
    return Promise.all([load("data/vocab.js", "vocab"), load("data/" + slug + "/summary.js", "summary:" + slug)])
      .then(([vocab, sum]) => {
        document.title = sum.name + " · SAE dashboard";
        const f = sum.features;
        root.appendChild(el("header", {}, [el("h1", { text: sum.name }), el("div", { cls: "meta" }, [
          el("a", { href: "index.html", text: "all SAEs" }),
          " · hook " + sum.hook + " · " + sum.architecture + (sum.k ? " k=" + sum.k : "") + " · d_sae " + sum.d_sae +
          " · " + sum.n_tokens + " tokens · " + sum.dead + " never fired · model " + sum.model])]));
        const search = el("input", { type: "search", placeholder: "feature id or token text", id: "search" });
        const sort = el("select", { id: "sort" }, ["max", "density", "id"].map(s => el("option", { value: s, text: "sort: " + s })));
        const hideDead = el("input", { type: "checkbox", id: "hide-dead", checked: "checked" });
        const tbody = el("tbody", { id: "rows" });
        const pager = el("div", { cls: "pager" });
        const list = el("div", { id: "list", cls: "card" }, [
          el("div", { cls: "controls" }, [search, sort, el("label", {}, [hideDead, " fired only"])]),
          el("table", {}, [el("thead", {}, [el("tr", {}, ["#", "density", "max", "top tokens"].map(
            (h, i) => el("th", { cls: i && i < 3 ? "num" : "", text: h })))]), tbody]), pager]);
        const panel = el("div", { id: "panel" }, [el("div", { cls: "card muted", text: "Select a feature." })]);
        root.appendChild(el("main", {}, [list, panel]));

        function matches(q) {
          q = q.trim().toLowerCase();
          if (!q) return () => true;
          if (/^\d+$/.test(q)) return i => i === Number(q);
          return i => f.keys[i].toLowerCase().includes(q);
        }
        function renderList() {
          const st = hashState();
          search.value = st.q || ""; sort.value = st.sort || "max";
          const keep = matches(search.value);
          let ids = [];
          for (let i = 0; i < sum.d_sae; i++) if (keep(i) && (!hideDead.checked || f.count[i] > 0)) ids.push(i);
          const key = sort.value === "density" ? f.density : sort.value === "max" ? f.max : null;
          if (key) ids.sort((a, b) => key[b] - key[a] || a - b);
          const pages = Math.max(1, Math.ceil(ids.length / PAGE));
          const page = Math.min(Math.max(0, Number(st.page || 0)), pages - 1);
          tbody.replaceChildren(...ids.slice(page * PAGE, (page + 1) * PAGE).map(i => {
            const tr = el("tr", { cls: "row" + (String(i) === st.f ? " selected" : ""), "data-feature": i }, [
              el("td", { text: i }), el("td", { cls: "num", text: pct(f.density[i]) }),
              el("td", { cls: "num", text: fmt(f.max[i]) }), el("td", { cls: "keys", text: f.keys[i] })]);
            tr.addEventListener("click", () => setHash({ f: i }));
            return tr;
          }));
          const prev = el("button", { text: "◀" }), next = el("button", { text: "▶" });
          prev.disabled = page === 0; next.disabled = page >= pages - 1;
          prev.onclick = () => setHash({ page: page - 1 }); next.onclick = () => setHash({ page: page + 1 });
          pager.replaceChildren(prev, el("span", { id: "count", text: ids.length + " features · page " + (page + 1) + "/" + pages }), next);
        }
        function renderFeature() {
          const st = hashState();
          if (st.f === undefined) return Promise.resolve();
          const id = Number(st.f);
          if (!(id >= 0 && id < sum.d_sae)) {
            panel.replaceChildren(el("div", { cls: "card", text: "No feature " + st.f + " (0.." + (sum.d_sae - 1) + ")." }));
            return Promise.resolve();
          }
          const chunk = Math.floor(id / sum.chunk), name = "features_" + String(chunk).padStart(4, "0");
          return load("data/" + slug + "/" + name + ".js", slug + "/" + name).then(data => {
            const feat = data.features[id - data.start];
            panel.replaceChildren(featureCard(feat, vocab, sum));
            document.body.dataset.feature = String(id);
          });
        }
        search.addEventListener("input", () => setHash({ q: search.value, page: 0 }));
        sort.addEventListener("change", () => setHash({ sort: sort.value, page: 0 }));
        hideDead.addEventListener("change", renderList);
        const update = () => { renderList(); return renderFeature(); };
        window.addEventListener("hashchange", () => update().catch(e => fail(String(e))));
        return update();
      });
  }
  function tokenList(pairs, vocab, cls) {
    return el("table", {}, [el("tbody", {}, pairs.map(([id, v]) => el("tr", {}, [
      el("td", { cls: "tokcell", text: JSON.stringify(visible(vocab[id])) }), el("td", { cls: "num " + cls, text: fmt(v) })])))]);
  }
  function featureCard(feat, vocab, sum) {
    const f = sum.features, id = feat.id;
    const card = el("div", { cls: "card", id: "feature" });
    card.appendChild(el("h2", { text: "Feature " + id }));
    card.appendChild(el("div", { cls: "stats" }, [
      el("span", { text: "density " + pct(f.density[id]) + " (" + f.count[id] + " of " + sum.n_tokens + " tokens)" }),
      el("span", { text: "mean act " + fmt(f.mean[id]) }), el("span", { text: "max act " + fmt(f.max[id]) })]));
    if (feat.hist.top > 0) {
      const edges = feat.hist.counts.map((_, i) => (feat.hist.top * i) / feat.hist.counts.length).concat([feat.hist.top]);
      card.appendChild(el("h3", { text: "Activation histogram (positive activations)" }));
      card.appendChild(histogram(feat.hist.counts, edges, "", ["0", fmt(feat.hist.top)]));
    }
    card.appendChild(el("h3", { text: "Logit lens (decoder row through the unembedding)" }));
    card.appendChild(el("div", { cls: "lens" }, [
      el("div", {}, [el("b", { text: "promoted" }), tokenList(feat.lens.pos, vocab, "pos")]),
      el("div", {}, [el("b", { text: "suppressed" }), tokenList(feat.lens.neg, vocab, "neg")])]));
    card.appendChild(el("h3", { text: "Top activations (" + feat.examples.length + ")" }));
    if (!feat.examples.length) card.appendChild(el("div", { cls: "muted", text: "Never fired on this corpus." }));
    const top = Math.max(1e-12, f.max[id]);
    feat.examples.forEach(ex => {
      const line = el("div", { cls: "example" }, [el("span", { cls: "val", text: fmt(ex.v) })]);
      ex.tok.forEach((t, j) => {
        if (t < 0) return;
        const a = ex.act[j];
        const span = el("span", { cls: "tok" + (j === sum.left ? " center" : ""), title: "act " + fmt(a) + " · id " + t,
                                  text: visible(vocab[t]) });
        if (a > 0) span.style.background = "rgba(251,140,0," + Math.min(1, 0.15 + 0.85 * a / top).toFixed(3) + ")";
        line.appendChild(span);
      });
      line.appendChild(el("span", { cls: "src", text: "doc " + ex.doc + " · token " + ex.pos }));
      card.appendChild(line);
    });
    return card;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.getElementById("app");
    const slug = document.body.dataset.sae;
    (slug ? renderSae(root, slug) : renderIndex(root))
      .then(() => { document.body.dataset.ready = "1"; })
      .catch(e => fail(String(e && e.stack || e)));
  });
})();
"""


def page(title: str, sae_slug: str | None = None) -> str:
    """An HTML page: the overview (``sae_slug`` None) or one SAE's page."""
    data_attr = f' data-sae="{html.escape(sae_slug, quote=True)}"' if sae_slug else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="assets/dashboard.css">
<script src="assets/dashboard.js"></script>
</head>
<body{data_attr}>
<div id="app"></div>
<pre id="errors"></pre>
<noscript>This dashboard needs JavaScript; its data are also in the data/ folder as JSON.</noscript>
</body>
</html>
"""
