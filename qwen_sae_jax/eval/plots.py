"""Evaluation plots (matplotlib, Agg backend, PNG):

    fvu_vs_layer.png            FVU against layer, one line per (site, variant)
    delta_lm_loss_vs_layer.png  CE_spliced - CE_clean against layer, one line per (site, variant)
    l0_vs_fvu.png               the sparsity / reconstruction trade-off: L0 against FVU, one point per SAE
    density_histograms.png      per SAE, the histogram of log10 latent firing frequency

Each layer is labelled with its kind (the rows' ``layer_kind``: "full" attention or "linear" Gated DeltaNet): the
layer axis ticks read "0\nlinear", the trade-off points "L0 linear", the histogram titles "(layer 0: linear)".
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


def layer_labels(rows, sep: str = "\n") -> dict[int, str]:
    """``{layer: "N<sep>kind"}`` for the layer axis, kind from the rows' ``layer_kind`` (just ``"N"`` where the rows
    name none: an eval.json written before the column existed)."""
    kinds: dict[int, str | None] = {}
    for row in rows:
        if row.get("layer") is not None:
            kinds.setdefault(row["layer"], row.get("layer_kind"))
    return {layer: f"{layer}{sep}{kind}" if kind else str(layer) for layer, kind in sorted(kinds.items())}


def _layer_axis(ax, rows) -> None:
    """A tick per evaluated layer, labelled with the layer's kind (rotated when there are many layers)."""
    many = len({r["layer"] for r in rows if r.get("layer") is not None}) > 12
    labels = layer_labels(rows, sep=" " if many else "\n")
    ax.set_xticks(list(labels), list(labels.values()), fontsize=5 if many else 7, rotation=90 if many else 0)
    ax.set_xlabel("layer and kind (full attention / linear = Gated DeltaNet)")


def _line_plot(rows, key: str, ylabel: str, title: str, path: Path, plt) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (site, variant), line in _by_line(rows).items():
        ax.plot([r["layer"] for r in line], [r[key] for r in line], marker="o", label=f"{site} ({variant})")
    _layer_axis(ax, rows)
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

    # one line per (site, layer) through its variants, coloured by site
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    by_site_layer = defaultdict(list)
    for row in rows:
        by_site_layer[(row["site"], row["layer"])].append(row)
    colours: dict = {}
    labelled: set = set()
    for (site, layer), pts in sorted(by_site_layer.items(), key=lambda kv: (SITE_ORDER.get(kv[0][0], 9),
                                                                           kv[0][1] if kv[0][1] is not None else -1)):
        pts = sorted(pts, key=lambda r: r["l0_mean"])
        colour = colours.setdefault(site, f"C{len(colours)}")
        first_of_site = len(colours) > len(labelled) and site not in labelled
        labelled.add(site)
        ax.plot([r["l0_mean"] for r in pts], [r["fvu"] for r in pts], marker="o", color=colour,
                label=site if first_of_site else None)
        kind = f" {pts[-1]['layer_kind']}" if pts[-1].get("layer_kind") else ""
        ax.annotate(f"L{layer}{kind}", (pts[-1]["l0_mean"], pts[-1]["fvu"]), fontsize=7, xytext=(3, 0),
                    textcoords="offset points")
    if all(r["fvu"] > 0 for r in rows):
        ax.set_yscale("log")
    ax.set_xlabel("L0 (active latents per token)")
    ax.set_ylabel("FVU")
    ax.set_title("Sparsity / reconstruction trade-off across variants")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["tradeoff"], dpi=120)
    plt.close(fig)

    saes = sorted(results.saes, key=lambda s: sort_key(s.row))
    cols = min(4, len(saes))
    nrows = math.ceil(len(saes) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.4 * nrows), squeeze=False)
    # the rarest observable frequency is 1 / n_tokens; dead latents (log10 density = log10(1e-10)) are
    # drawn as a separate red bar one decade below it
    rarest = math.log10(1.0 / max(results.n_tokens, 1))
    dead_at = math.floor(rarest) - 1.0
    bins = np.linspace(math.floor(rarest) - 0.5, 0, 31)
    for ax, s in zip(axes.flat, saes):
        dead_mask = s.log10_density <= math.log10(LOG_DENSITY_EPS) + 1e-6
        ax.hist(s.log10_density[~dead_mask], bins=bins, color="tab:blue")
        dead = int(np.sum(dead_mask))
        if dead:
            ax.bar([dead_at], [dead], width=0.4, color="tab:red")
        ax.set_xlim(dead_at - 0.5, 0.1)
        kind = f" (layer {s.row['layer']}: {s.row['layer_kind']})" if s.row.get("layer_kind") else ""
        ax.set_title(f"{s.name}{kind}\n{dead} dead (red) of {len(s.log10_density)}", fontsize=7)
        ax.set_xlabel("log10 firing frequency", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(saes):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(paths["density"], dpi=110)
    plt.close(fig)
    return paths
