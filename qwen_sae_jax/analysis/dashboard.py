"""A static, offline HTML dashboard of SAE features (no server, no network resources).

Layout of ``OUT``::

    index.html                  overview: one row per SAE (hook, architecture, L0 and dead share on the
                                corpus, FVU from the run's summary.json, log10-density histogram)
    <sae>.html                  one page per SAE: searchable / sortable feature list + a feature panel
                                (examples with highlighted tokens, density, activation histogram, logit lens)
    assets/dashboard.{css,js}   the viewer (plain JavaScript)
    data/index.json             overview data
    data/vocab.json             {token id: decoded text} for every id shown anywhere
    data/<sae>/summary.json     per-feature arrays: count, density, mean, max, keys (search text)
    data/<sae>/features_NNNN.json   details of features [NNNN * chunk, (NNNN + 1) * chunk)
    data/**.js                  the same JSON wrapped as ``QSD_LOAD("<key>", ...);`` for file:// viewing
    dashboard.json              how it was made (model, corpus, settings)

The folder is written to a temporary sibling and renamed into place; an existing dashboard there
(recognised by dashboard.json) is replaced, any other existing path is refused.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from qwen_sae_jax.analysis import dashboard_assets as assets
from qwen_sae_jax.analysis.collect import collect_features
from qwen_sae_jax.analysis.corpus import corpus_windows
from qwen_sae_jax.analysis.examples import FeatureData
from qwen_sae_jax.analysis.logit_lens import LogitLens, sae_logit_lens
from qwen_sae_jax.analysis.render import token_strings, visible
from qwen_sae_jax.atomic import atomic_directory
from qwen_sae_jax.errors import UserError

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE

MARKER = "dashboard.json"
DENSITY_EDGES = np.arange(-8.0, 0.01, 0.5)   # log10 density bins of the overview histograms


@dataclasses.dataclass
class DashboardConfig:
    max_tokens: int = 32768
    """Corpus tokens to read (windows cut from the documents in order)."""
    ctx_len: int = 64
    """Tokens per window fed to the model."""
    batch_size: int = 8
    """Windows per forward."""
    n_examples: int = 10
    """Top-activating examples kept per feature."""
    left: int = 12
    """Context tokens shown before an example's token."""
    right: int = 4
    """Context tokens shown after it."""
    lens_k: int = 8
    """Promoted / suppressed tokens per feature in the logit lens."""
    chunk: int = 256
    """Features per detail file."""
    exclude_first: bool = True
    """Do not count each window's first token (attention-sink activations)."""
    seed: int = 0
    """Documents are read in an order shuffled with this seed (so a token budget samples every file)."""

    def __post_init__(self):
        for name, minimum in MINIMUMS.items():
            if int(getattr(self, name)) < minimum:
                raise UserError(f"dashboard {name} (--{name.replace('_', '-')}) must be an integer >= {minimum}, "
                                f"got {getattr(self, name)}")


# the smallest valid value of each integer field of DashboardConfig (seed: any)
MINIMUMS = {"max_tokens": 1, "ctx_len": 2, "batch_size": 1, "n_examples": 1, "left": 0, "right": 0, "lens_k": 1,
            "chunk": 1}


def slug(name: str) -> str:
    """A file-name-safe version of an SAE name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "sae"


def _round(x, digits: int = 4):
    """Floats rounded to ``digits`` significant digits (JSON size); nested lists kept."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_round(v, digits) for v in x]
    x = float(x)
    if x == 0.0 or not math.isfinite(x):
        return 0.0
    return float(f"{x:.{digits}g}")


def _density_hist(data: FeatureData) -> dict:
    fired = data.density[data.fire_count > 0]
    if fired.size:
        counts = np.histogram(np.clip(np.log10(fired), DENSITY_EDGES[0], 0.0), bins=DENSITY_EDGES)[0]
    else:
        counts = np.zeros(len(DENSITY_EDGES) - 1)
    return {"edges": DENSITY_EDGES.tolist(), "counts": [int(c) for c in counts]}


def _feature_keys(data: FeatureData, lens: LogitLens, strings: Mapping[int, str]) -> list[str]:
    """Per feature, the search text: distinct example tokens (strongest first) | top promoted tokens."""
    keys = []
    for f in range(data.d_sae):
        shown = []
        for j in range(data.values.shape[1]):
            if not data.values[f, j] > 0:
                break
            s = visible(strings.get(int(data.tokens[f, j, data.left]), "")).strip()
            if s and s not in shown:
                shown.append(s)
            if len(shown) == 4:
                break
        promoted = [visible(strings.get(int(i), "")).strip() for i in lens.top_ids[f][:3]]
        keys.append(" ".join(shown) + " | " + " ".join(p for p in promoted if p))
    return keys


def _feature_detail(data: FeatureData, lens: LogitLens, f: int, windows) -> dict:
    examples = []
    for e in data.examples(f):
        seq = e["seq"]
        examples.append({"v": _round(e["value"]), "doc": int(windows.doc_index[seq]),
                         "pos": int(windows.doc_offset[seq]) + e["pos"], "tok": e["tokens"],
                         "act": _round(e["acts"], 3)})
    top = float(data.hist_edges(f)[-1])
    return {"id": f, "hist": {"top": top, "counts": [int(c) for c in data.hist[f]]},
            "lens": {"pos": [[int(i), _round(v)] for i, v in zip(lens.top_ids[f], lens.top_values[f])],
                     "neg": [[int(i), _round(v)] for i, v in zip(lens.bottom_ids[f], lens.bottom_values[f])]},
            "examples": examples}


def _write(folder: Path, rel: str, key: str, obj) -> None:
    """``rel``.json and ``rel``.js (the JSONP twin) under ``folder``."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(text, encoding="utf-8")
    path.with_suffix(".js").write_text(f"QSD_LOAD({json.dumps(key)},{text});\n", encoding="utf-8")


def build_dashboard(lm, saes: Mapping[str, "SAE"], docs: Sequence[str], out_dir: str | os.PathLike,
                    config: DashboardConfig = DashboardConfig(), *, run_summary: Mapping[str, dict] | None = None,
                    title: str = "SAE feature dashboard", corpus_name: str = "the corpus", progress=None) -> Path:
    """Analyse ``saes`` ({name: SAE}) over ``docs`` with ``lm`` and write the dashboard to ``out_dir``.

    ``run_summary``: the run's summary.json ({name: metrics}); FVU / L0 from it are shown when present."""
    out = Path(out_dir)
    if out.exists() and not (out / MARKER).is_file():
        raise UserError(f"{out} exists and is not a dashboard made by qwen-sae; choose another --out")
    if not saes:
        raise UserError("no SAEs to show")
    slugs = {name: slug(name) for name in saes}
    if len(set(slugs.values())) != len(slugs):
        raise UserError(f"SAE names collide once made file-safe: {sorted(slugs)}")
    order = np.random.default_rng(config.seed).permutation(len(docs))
    windows = corpus_windows(lm.tokenizer, (docs[int(i)] for i in order), config.ctx_len, config.max_tokens,
                             lm.pad_token_id)
    windows.doc_index = order[windows.doc_index].astype(np.int32)     # examples point at the caller's docs
    data = collect_features(lm, saes, windows, n_examples=config.n_examples, left=config.left, right=config.right,
                            batch_size=config.batch_size, exclude_first=config.exclude_first, progress=progress)
    lenses = {name: sae_logit_lens(lm, sae, k=config.lens_k) for name, sae in saes.items()}

    used = set()
    for name in saes:
        used.update(np.unique(data[name].tokens).tolist())
        used.update(np.unique(lenses[name].top_ids).tolist())
        used.update(np.unique(lenses[name].bottom_ids).tolist())
    strings = token_strings(lm.tokenizer, (i for i in used if i >= 0))

    with atomic_directory(out, force=True) as tmp:
        (tmp / "assets").mkdir()
        (tmp / "assets" / "dashboard.css").write_text(assets.CSS, encoding="utf-8")
        (tmp / "assets" / "dashboard.js").write_text(assets.JS, encoding="utf-8")
        _write(tmp, "data/vocab", "vocab", {str(i): s for i, s in strings.items()})
        overview = []
        for name, sae in saes.items():
            d, lens, s = data[name], lenses[name], slugs[name]
            metrics = dict((run_summary or {}).get(name, {}))
            summary = {
                "name": name, "hook": sae.cfg.hook_name, "architecture": sae.cfg.architecture,
                "k": sae.cfg.k, "d_sae": sae.cfg.d_sae, "d_in": sae.cfg.d_in, "model": lm.name,
                "n_tokens": d.n_tokens, "dead": int((d.fire_count == 0).sum()), "chunk": config.chunk,
                "left": config.left, "right": config.right, "metrics": metrics,
                "features": {"count": d.fire_count.tolist(), "density": _round(d.density),
                             "mean": _round(d.mean_act), "max": _round(d.max_act),
                             "keys": _feature_keys(d, lens, strings)},
            }
            _write(tmp, f"data/{s}/summary", f"summary:{s}", summary)
            for start in range(0, sae.cfg.d_sae, config.chunk):
                part = f"features_{start // config.chunk:04d}"
                stop = min(start + config.chunk, sae.cfg.d_sae)
                feats = [_feature_detail(d, lens, f, windows) for f in range(start, stop)]
                _write(tmp, f"data/{s}/{part}", f"{s}/{part}", {"start": start, "features": feats})
            (tmp / f"{s}.html").write_text(assets.page(f"{name} · SAE dashboard", s), encoding="utf-8")
            row = {"name": name, "page": f"{s}.html", "hook": sae.cfg.hook_name,
                   "architecture": sae.cfg.architecture, "k": sae.cfg.k, "d_sae": sae.cfg.d_sae,
                   "l0": _round(d.fire_count.sum() / max(d.n_tokens, 1)),
                   "dead_fraction": _round((d.fire_count == 0).mean()), "density_hist": _density_hist(d)}
            if "fvu" in metrics:
                row["fvu"] = _round(metrics["fvu"])
            overview.append(row)
        _write(tmp, "data/index", "index", {"title": title, "model": lm.name, "corpus": corpus_name,
                                            "n_tokens": windows.num_tokens, "saes": overview})
        (tmp / "index.html").write_text(assets.page(title), encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps({"format": "qwen_sae_jax dashboard", "version": 1, "model": lm.name,
                                              "corpus": corpus_name, "n_windows": int(windows.input_ids.shape[0]),
                                              "n_tokens": windows.num_tokens, "saes": list(saes),
                                              "config": dataclasses.asdict(config)}, indent=2) + "\n")
    return out
