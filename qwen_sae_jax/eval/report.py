"""Evaluation tables: Markdown, CSV and JSON, one row per SAE (sorted by layer and site) plus joint rows.

Files written by `write_report` into the output folder:

    eval.md                     the per-(layer, site) table and the joint-splicing table; both name each layer's kind
                                (``layer_kind``: "full" attention or "linear" Gated DeltaNet, from the model's
                                per-layer mixer; "-" in rows of an older eval.json without it)
    eval.csv                    every metric of every SAE, one row each
    eval.json                   config, rows, joint rows, per-SAE L0 histograms
    feature_density.safetensors {sae name: log10 firing frequency [d_sae]} (for `qwen-sae export --density`)
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

SITE_ORDER = {"resid_pre": 0, "attn_out": 1, "mlp_out": 2, "resid_post": 3}

# (column title, row key, format) of the Markdown table
TABLE_COLUMNS = [
    ("layer", "layer", "{}"), ("kind", "layer_kind", "{}"), ("site", "site", "{}"), ("variant", "variant", "{}"),
    ("d_sae", "d_sae", "{}"), ("L0", "l0_mean", "{:.1f}"), ("FVU", "fvu", "{:.4f}"),
    ("expl. var.", "explained_variance", "{:.4f}"), ("cos", "cossim", "{:.3f}"), ("dead %", "dead_fraction", "pct"),
    ("dense %", "dense_fraction", "pct"), ("CE clean", "ce_clean", "{:.4f}"), ("CE spliced", "ce_spliced", "{:.4f}"),
    ("ΔLM loss", "delta_lm_loss", "{:.4f}"), ("CE rec. (zero)", "ce_loss_recovered", "{:.3f}"),
    ("CE rec. (mean)", "ce_loss_recovered_mean_ablation", "{:.3f}"), ("KL", "kl_spliced", "{:.4f}"),
]
JOINT_COLUMNS = [
    ("group", "name", "{}"), ("kind", "layer_kind", "{}"), ("hooks", "hooks", "list"),
    ("CE clean", "ce_clean", "{:.4f}"), ("CE spliced", "ce_spliced", "{:.4f}"), ("ΔLM loss", "delta_lm_loss", "{:.4f}"),
    ("CE rec. (zero)", "ce_loss_recovered", "{:.3f}"), ("CE rec. (mean)", "ce_loss_recovered_mean_ablation", "{:.3f}"),
    ("KL", "kl_spliced", "{:.4f}"),
]


def sort_key(row: dict):
    layer = row.get("layer")
    return (layer if layer is not None else 1 << 30, SITE_ORDER.get(str(row.get("site")), 9), str(row.get("variant")),
            row.get("name"))


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "pct":
        return f"{100 * value:.1f}"
    if fmt == "list":
        return ", ".join(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return fmt.format(value)


def markdown_table(rows: Sequence[dict], columns=TABLE_COLUMNS) -> str:
    lines = ["| " + " | ".join(title for title, _, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key), fmt) for _, key, fmt in columns) + " |")
    return "\n".join(lines)


def render_markdown(results, title: str = "SAE evaluation") -> str:
    rows = sorted(results.rows(), key=sort_key)
    cfg = results.config
    parts = [f"# {title}", "",
             f"{results.n_tokens} evaluated positions (special tokens {'excluded' if cfg.exclude_special else 'kept'}, "
             f"first position {'excluded' if cfg.exclude_first else 'kept'}); clean next-token CE "
             f"{results.ce_clean:.4f} nats. Explained variance as SAELens defines it; FVU = 1 - explained "
             "variance; CE rec. = (CE_ablated - CE_spliced) / (CE_ablated - CE_clean). kind = the layer's token "
             "mixer: full attention or linear (Gated DeltaNet).", "",
             markdown_table(rows), ""]
    if results.joint:
        parts += ["## All SAEs of a layer spliced together", "", markdown_table(results.joint, JOINT_COLUMNS), ""]
    return "\n".join(parts)


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(results, out_dir: str | Path, title: str = "SAE evaluation") -> dict[str, Path]:
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = sorted(results.rows(), key=sort_key)
    paths = {"md": out_dir / "eval.md", "csv": out_dir / "eval.csv", "json": out_dir / "eval.json",
             "density": out_dir / "feature_density.safetensors"}
    paths["md"].write_text(render_markdown(results, title))
    keys = list(rows[0].keys())
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _jsonable(row[k]) for k in keys})
    payload = {
        "config": dataclasses.asdict(results.config), "n_tokens": results.n_tokens, "ce_clean": results.ce_clean,
        "saes": [{k: _jsonable(v) for k, v in row.items()} for row in rows],
        "joint": [{k: _jsonable(v) for k, v in row.items()} for row in results.joint],
        "l0_histograms": {s.name: s.l0_hist.tolist() for s in results.saes},
    }
    paths["json"].write_text(json.dumps(payload, indent=2) + "\n")
    save_file({s.name: np.asarray(s.log10_density, np.float32) for s in results.saes}, str(paths["density"]))
    return paths


def load_rows(eval_json: str | Path) -> tuple[list[dict], list[dict]]:
    """``(sae rows, joint rows)`` from an ``eval.json``."""
    data = json.loads(Path(eval_json).read_text())
    return data["saes"], data.get("joint", [])
