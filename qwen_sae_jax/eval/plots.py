"""Evaluation plots (matplotlib, Agg backend, PNG):

    fvu_vs_layer.png            FVU against layer, one line per (site, variant)
    delta_lm_loss_vs_layer.png  CE_spliced - CE_clean against layer, one line per (site, variant)
    l0_vs_fvu.png               the sparsity / reconstruction trade-off: L0 against FVU, one point per SAE
    density_histograms.png      per SAE, the histogram of log10 latent firing frequency
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from qwen_sae_jax.eval.metrics import LOG_DENSITY_EPS
from qwen_sae_jax.eval.report import SITE_ORDER, sort_key


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _by_line(rows):
    lines = defaultdict(list)
    for row in sorted(rows, key=sort_key):
        if row.get("layer") is not None:
            lines[(row["site"], row["variant"])].append(row)
    return dict(sorted(lines.items(), key=lambda kv: (SITE_ORDER.get(kv[0][0], 9), kv[0][1])))


def _line_plot(rows, key: str, ylabel: str, title: str, path: Path, plt) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (site, variant), line in _by_line(rows).items():
        ax.plot([r["layer"] for r in line], [r[key] for r in line], marker="o", label=f"{site} ({variant})")
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_all(results, out_dir: str | Path) -> dict[str, Path]:
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = results.rows()
    paths = {"fvu": out_dir / "fvu_vs_layer.png", "delta": out_dir / "delta_lm_loss_vs_layer.png",
             "tradeoff": out_dir / "l0_vs_fvu.png", "density": out_dir / "density_histograms.png"}
    _line_plot(rows, "fvu", "fraction of variance unexplained", "FVU by layer", paths["fvu"], plt)
    _line_plot(rows, "delta_lm_loss", "CE spliced - CE clean (nats)", "Delta LM loss by layer", paths["delta"], plt)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (site, variant), line in _by_line(rows).items():
        ax.scatter([r["l0_mean"] for r in line], [r["fvu"] for r in line], label=f"{site} ({variant})")
        for r in line:
            ax.annotate(str(r["layer"]), (r["l0_mean"], r["fvu"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("L0 (active latents per token)")
    ax.set_ylabel("FVU")
    ax.set_title("Sparsity / reconstruction trade-off (labels: layer)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["tradeoff"], dpi=120)
    plt.close(fig)

    saes = sorted(results.saes, key=lambda s: sort_key(s.row))
    cols = min(4, len(saes))
    nrows = math.ceil(len(saes) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.4 * nrows), squeeze=False)
    floor = math.log10(LOG_DENSITY_EPS)
    bins = np.linspace(floor, 0, 41)
    for ax, s in zip(axes.flat, saes):
        ax.hist(np.clip(s.log10_density, floor, 0), bins=bins, color="tab:blue")
        dead = int(np.sum(s.log10_density <= floor + 1e-6))
        ax.set_title(f"{s.name}\n{dead} dead of {len(s.log10_density)}", fontsize=7)
        ax.set_xlabel("log10 firing frequency", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(saes):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(paths["density"], dpi=110)
    plt.close(fig)
    return paths
