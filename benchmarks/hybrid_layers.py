"""The hybrid-layer study: SAEs on Gated DeltaNet (linear-attention) layers against full-attention layers of
the embedded tiny Qwen3.5, at equal SAE width and k, over several training seeds (docs/hybrid.md).

    .venv/bin/python benchmarks/hybrid_layers.py --out runs/hybrid                 # trains + evaluates 3 seeds
    .venv/bin/python benchmarks/hybrid_layers.py --out runs/hybrid --runs A B C    # existing runs of that config

Each seed trains `configs/tiny-qwen3.5.yaml` (12 TopK SAEs: every layer x {residual, MLP out, token-mixer out},
d_sae 1536, k 32, 500k activations, `train.seed` = the seed) and evaluates it with `qwen-sae eval` (the run's
held-out documents: FVU, L0, dead latents, CE loss recovered, delta LM loss, KL). It writes OUT/hybrid.md (the
per-layer table, mean and range over seeds; the per-kind summary) and OUT/hybrid.png (one panel per metric,
layers on the x axis, linear and full layers told apart), and prints the tables. Last line:
``hybrid: seeds=S linear_mixer_fvu=A full_mixer_fvu=B linear_mixer_dead=C full_mixer_dead=D`` (token-mixer SAEs,
means over layers of that kind and seeds).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "tiny-qwen3.5.yaml"
METRICS = [("fvu", "FVU", "{:.4f}"), ("l0_mean", "L0", "{:.1f}"), ("dead_fraction", "dead %", "pct"),
           ("ce_loss_recovered", "CE rec. (zero)", "{:.3f}"), ("delta_lm_loss", "ΔLM loss", "{:.4f}"),
           ("kl_spliced", "KL", "{:.4f}")]
SITES = ("attn_out", "mlp_out", "resid_post")


def qwen_sae(*args: str) -> None:
    cmd = [sys.executable, "-m", "qwen_sae_jax.cli", *args]
    print("$ qwen-sae " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def train_and_eval(out: Path, seeds: list[int]) -> list[Path]:
    runs = []
    for seed in seeds:
        run = out / f"seed{seed}"
        if not (run / "summary.json").is_file():
            qwen_sae("train", str(CONFIG), f"run_dir={run}", f"train.seed={seed}", "log.progress=lines")
        if not (run / "eval" / "eval.json").is_file():
            qwen_sae("eval", str(run), "--no-plots")
        runs.append(run)
    return runs


def load_rows(runs: list[Path]) -> dict[tuple, list[dict]]:
    """(layer, kind, site) -> one eval row per run."""
    by_key: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        for row in json.loads((run / "eval" / "eval.json").read_text())["saes"]:
            by_key[row["layer"], row["layer_kind"], row["site"]].append(row)
    return dict(sorted(by_key.items()))


def cell(values: list[float], fmt: str) -> str:
    scale, fmt = (100.0, "{:.1f}") if fmt == "pct" else (1.0, fmt)
    v = np.asarray(values) * scale
    if len(v) == 1:
        return fmt.format(v[0])
    return f"{fmt.format(v.mean())} ({fmt.format(v.min())}-{fmt.format(v.max())})"


def per_layer_table(rows: dict[tuple, list[dict]]) -> str:
    head = "| layer | kind | site | " + " | ".join(name for _, name, _ in METRICS) + " |"
    lines = [head, "|" + "---|" * (3 + len(METRICS))]
    for (layer, kind, site), group in rows.items():
        cells = [cell([r[key] for r in group], fmt) for key, _, fmt in METRICS]
        lines.append(f"| {layer} | {kind} | {site} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_kind(rows: dict[tuple, list[dict]]) -> dict[tuple, dict[str, list[float]]]:
    """(site, kind) -> metric -> every value over layers of that kind and seeds."""
    out: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (_, kind, site), group in rows.items():
        for key, _, _ in METRICS:
            out[site, kind][key].extend(r[key] for r in group)
    return out


def per_kind_table(summary: dict[tuple, dict[str, list[float]]]) -> str:
    head = "| site | kind | " + " | ".join(name for _, name, _ in METRICS) + " |"
    lines = [head, "|" + "---|" * (2 + len(METRICS))]
    for site in SITES:
        for kind in ("linear", "full"):
            if (site, kind) in summary:
                cells = [cell(summary[site, kind][key], fmt) for key, _, fmt in METRICS]
                lines.append(f"| {site} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: dict[tuple, list[dict]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    shown = [m for m in METRICS if m[0] in ("fvu", "dead_fraction", "delta_lm_loss", "kl_spliced")]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.6))
    markers = {"attn_out": "o", "mlp_out": "s", "resid_post": "^"}
    colors = {"linear": "tab:orange", "full": "tab:blue"}
    for ax, (key, name, _) in zip(axes, shown):
        for (layer, kind, site), group in rows.items():
            values = np.asarray([r[key] for r in group]) * (100 if key == "dead_fraction" else 1)
            x = layer + {"attn_out": -0.2, "mlp_out": 0.0, "resid_post": 0.2}[site]
            ax.errorbar(x, values.mean(), yerr=[[values.mean() - values.min()], [values.max() - values.mean()]],
                        fmt=markers[site], color=colors[kind], capsize=2, ms=6)
        ax.set_title(name)
        ax.set_xticks(sorted({k[0] for k in rows}))
        ax.set_xticklabels([f"{layer}\n{kind}" for layer, kind in sorted({k[:2] for k in rows})])
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color="gray", marker=m, ls="", label=s) for s, m in markers.items()]
    handles += [plt.Line2D([], [], color=c, marker="o", ls="", label=f"{k} layer") for k, c in colors.items()]
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False)
    fig.suptitle("tiny-qwen3.5 SAEs by layer kind (mean and range over seeds)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs, hybrid.md and hybrid.png")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (train.seed)")
    parser.add_argument("--runs", type=Path, nargs="+", default=None,
                        help="evaluated runs of configs/tiny-qwen3.5.yaml to read instead of training")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = args.runs or train_and_eval(args.out, args.seeds)
    rows = load_rows(runs)
    summary = per_kind(rows)
    text = (f"# tiny-qwen3.5 SAEs by layer kind ({len(runs)} seed(s))\n\n## Per layer and site\n\n"
            f"{per_layer_table(rows)}\n\n## Per site and layer kind\n\n{per_kind_table(summary)}\n")
    (args.out / "hybrid.md").write_text(text)
    plot(rows, args.out / "hybrid.png")
    print(text)
    mean = {kind: {key: float(np.mean(summary["attn_out", kind][key])) for key in ("fvu", "dead_fraction")}
            for kind in ("linear", "full")}
    print(f"hybrid: seeds={len(runs)} linear_mixer_fvu={mean['linear']['fvu']:.4f} "
          f"full_mixer_fvu={mean['full']['fvu']:.4f} linear_mixer_dead={mean['linear']['dead_fraction']:.4f} "
          f"full_mixer_dead={mean['full']['dead_fraction']:.4f}")


if __name__ == "__main__":
    main()
