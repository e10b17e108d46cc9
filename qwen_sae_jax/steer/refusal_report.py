"""Report of the refusal-steering study: ``report.md``, ``report.json`` and PNG plots in ``out_dir``.

    refusal_vs_alpha.png   refusal rate on held-out harmless prompts against alpha, one panel per hook:
                           each top feature, the random controls (mean and range), the difference-of-means
                           direction, and the unsteered baseline
    fluency_vs_alpha.png   the unsteered model's cross-entropy on the steered completions, same layout
    reverse.png            refusal rate on held-out harmful prompts: baseline, top-n ablations and their
                           random controls, negative steering
Every number in the Markdown comes from the JSON; nothing is edited by hand.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def atomic_write_text(path: Path, text: str) -> None:
    from qwen_sae_jax.atomic import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _save_figure(fig, path: Path) -> None:
    """``fig`` as a PNG at ``path``, through a temporary file renamed into place (complete or absent)."""
    from qwen_sae_jax.atomic import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _panels(plt, n):
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _curve_plot(results: dict, key: str, ylabel: str, path: Path, baseline: float) -> None:
    plt = _pyplot()
    hooks = list(results["per_hook"])
    fig, axes = _panels(plt, len(hooks))
    for ax, hook in zip(axes, hooks):
        rows = results["per_hook"][hook]["steer"]
        alphas = sorted({r["alpha"] for r in rows})
        for feature in dict.fromkeys(r["feature"] for r in rows if r["kind"] == "top"):
            ys = [next(r[key] for r in rows if r["kind"] == "top" and r["feature"] == feature and r["alpha"] == a)
                  for a in alphas]
            ax.plot(alphas, ys, marker="o", label=f"top feature {feature}")
        rnd = np.array([[r[key] for r in rows if r["kind"] == "random" and r["alpha"] == a] for a in alphas])
        if rnd.size:
            ax.plot(alphas, rnd.mean(1), color="gray", ls="--", marker="s",
                    label=f"random controls (mean of {rnd.shape[1]})")
            ax.fill_between(alphas, rnd.min(1), rnd.max(1), color="gray", alpha=0.2)
        dom = [next(r[key] for r in rows if r["kind"] == "diff_means" and r["alpha"] == a) for a in alphas]
        ax.plot(alphas, dom, color="black", marker="^", label="difference of means")
        ax.axhline(baseline, color="red", lw=0.8, ls=":", label="unsteered")
        unit = "x mean norm" if results["config"]["alpha_unit"] == "norm" else "absolute"
        ax.set_xlabel(f"alpha ({unit})")
        ax.set_ylabel(ylabel)
        ax.set_title(hook)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def _reverse_plot(results: dict, path: Path) -> None:
    plt = _pyplot()
    hooks = list(results["per_hook"])
    fig, axes = _panels(plt, len(hooks))
    base = results["baseline"]["harmful"]["refusal_rate"]
    for ax, hook in zip(axes, hooks):
        rows = results["per_hook"][hook]["reverse"]
        labels = ["unsteered"] + [_reverse_label(r) for r in rows]
        values = [base] + [r["refusal_rate"] for r in rows]
        colors = ["red"] + ["gray" if "random" in r["kind"] else "tab:blue" for r in rows]
        ax.barh(range(len(values)), values, color=colors)
        ax.set_yticks(range(len(values)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("refusal rate (held-out harmful)")
        ax.set_title(hook)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def _reverse_label(r: dict) -> str:
    return {"ablate_top": f"ablate top {r['feature']}", "ablate_random": f"ablate {r['feature']} random",
            "negative_top": f"feature {r['feature']} alpha {r['alpha']:g}",
            "negative_diff_means": f"-diff-of-means alpha {r['alpha']:g}"}[r["kind"]]


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _quote(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return "`" + (text[:limit] + ("…" if len(text) > limit else "")).replace("`", "'") + "`" if text else "*(empty)*"


# long: one document template, read top to bottom like the report it writes
def markdown(results: dict) -> str:
    cfg, base = results["config"], results["baseline"]
    v = results["verdict"]
    unit = "multiples of the hook's mean activation norm" if cfg["alpha_unit"] == "norm" else "raw activation units"
    lines = [
        "# Refusal steering with SAE features", "",
        f"Model `{results['model']}`; SAEs from {', '.join(f'`{s}`' for s in cfg['saes'])}; hooks "
        f"{', '.join(f'`{h}`' for h in results['hooks'])}. Run time {results['seconds']:.0f} s.", "",
        f"Prompts (chat-templated user turns): harmful `{cfg['prompts']['harmful']}`, harmless "
        f"`{cfg['prompts']['harmless']}`, shuffled with seed {cfg['seed']}; features ranked on "
        f"{results['prompts']['rank_harmful']} harmful + {results['prompts']['rank_harmless']} harmless prompts, "
        f"steering measured on the other {results['prompts']['eval_harmless']} harmless / "
        f"{results['prompts']['eval_harmful']} harmful prompts.", "",
        f"Ranking: `{cfg['rank_by']}` (harmful - harmless) of the SAE latents at the "
        + ("**last prompt token** (the end of `<|im_start|>assistant\\n`)" if cfg["position"] == "last"
           else "**mean over prompt tokens**") + ". "
        f"Steering adds alpha times a feature's **unit-normalised** decoder row (raw units) at positions "
        f"`{cfg['where']}`; alpha in {unit}. Generation: greedy, {cfg['max_new_tokens']} new tokens. "
        "Refusal: `qwen_sae_jax.steer.refusal_matcher` (phrase match"
        + (f", first {cfg['window']} characters" if cfg["window"] else "") + "). "
        "Fluency proxy: the unsteered model's cross-entropy on the completion (nats/token; lower = more "
        "ordinary text for this model) and the distinct-token ratio.", "",
        "## Verdict", "",
    ]
    b = v["best"]
    if b is None:
        lines.append("No steering measurement was made (no non-zero alpha).")
    else:
        rnd = f"random controls at that alpha: mean {_pct(b['random_mean'])}, max {_pct(b['random_max'])}"
        if v["met"]:
            lines.append(f"**Target met** in {v['settings_meeting']} of {v['settings']} top-feature settings "
                         f"(>= {_pct(v['target'])} refusal on held-out harmless prompts with the random controls' "
                         f"mean within {100 * v['near_baseline']:.0f} points of the {_pct(v['baseline_harmless'])} "
                         f"baseline). The most fluent of them: feature {b['feature']} at `{b['hook']}`, alpha "
                         f"{b['alpha']:g}: {_pct(v['baseline_harmless'])} -> {_pct(b['refusal_rate'])} refusal, CE "
                         f"{b['ce']:.2f} nats/token (unsteered {results['baseline']['harmless']['ce']:.2f}); {rnd}.")
        else:
            lines.append(f"**Target not met** (>= {_pct(v['target'])} refusal with random controls within "
                         f"{100 * v['near_baseline']:.0f} points of the {_pct(v['baseline_harmless'])} baseline). "
                         f"Best top feature: {b['feature']} at `{b['hook']}`, alpha {b['alpha']:g}: "
                         f"{_pct(b['refusal_rate'])} ({rnd}).")
        h = v["highest"]
        if h is not None and h != b:
            lines.append("")
            lines.append(f"Highest refusal of any top feature: {_pct(h['refusal_rate'])} (feature {h['feature']} at "
                         f"`{h['hook']}`, alpha {h['alpha']:g}, CE {h['ce']:.2f}; random controls mean "
                         f"{_pct(h['random_mean'])}). At large alphas completions degrade (CE rises, see the "
                         "examples and `fluency_vs_alpha.png`), and refusal phrases can appear in broken text.")
    lines += ["", "## Baseline (unsteered)", "",
              "| prompts | refusal | CE (nats/tok) | distinct | mean tokens |", "|---|---|---|---|---|"]
    for name in ("harmless", "harmful"):
        m = base[name]
        lines.append(f"| held-out {name} | {_pct(m['refusal_rate'])} | {m['ce']:.2f} | {m['distinct']:.2f} | "
                     f"{m['mean_tokens']:.1f} |")
    for hook, entry in results["per_hook"].items():
        lines += ["", f"## `{hook}`", "",
                  f"Mean activation norm {entry['scale']:.3f} (alpha 1 = a vector of this norm); difference-of-"
                  f"means vector norm {entry['direction_norm']:.3f}. Random controls: features "
                  f"{entry['random_controls']} (pooled firing rates "
                  f"{', '.join(f'{x:.2f}' for x in entry['random_control_rates'])}; top features' "
                  f"{', '.join(f'{x:.2f}' for x in entry['top_rates'])}).", "",
                  "Top-ranked features (ranking prompts):", "",
                  "| rank | feature | mean diff | rate diff | "
                  "mean harmful | mean harmless | rate harmful | rate harmless |",
                  "|---|---|---|---|---|---|---|---|"]
        for i, row in enumerate(entry["top"][:10], 1):
            lines.append(f"| {i} | {row['feature']} | {row['mean_diff']:.3f} | {row['rate_diff']:+.2f} | "
                         f"{row['mean_pos']:.3f} | {row['mean_neg']:.3f} | "
                         f"{row['rate_pos']:.2f} | {row['rate_neg']:.2f} |")
        alphas = sorted({r["alpha"] for r in entry["steer"]})
        lines += ["", "Refusal rate on held-out **harmless** prompts (CE in parentheses):", "",
                  "| steering | " + " | ".join(f"alpha {a:g}" for a in alphas) + " |",
                  "|---" * (len(alphas) + 1) + "|"]
        kinds = [("top", f) for f in dict.fromkeys(r["feature"] for r in entry["steer"] if r["kind"] == "top")]
        kinds += [("random", f) for f in entry["random_controls"]] + [("diff_means", None)]
        for kind, feature in kinds:
            cells = []
            for a in alphas:
                r = next(r for r in entry["steer"] if r["kind"] == kind and r["feature"] == feature and r["alpha"] == a)
                cells.append(f"{_pct(r['refusal_rate'])} ({r['ce']:.2f})")
            name = {"top": f"top feature {feature}", "random": f"random feature {feature}",
                    "diff_means": "difference of means"}[kind]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if entry["random_controls"]:
            means = [np.mean([r["refusal_rate"] for r in entry["steer"] if r["kind"] == "random" and r["alpha"] == a])
                     for a in alphas]
            lines.append("| *random controls, mean* | " + " | ".join(_pct(m) for m in means) + " |")
        lines += ["", "Reverse, on held-out **harmful** prompts (unsteered refusal "
                  f"{_pct(base['harmful']['refusal_rate'])}):", "", "| intervention | refusal | CE | distinct |",
                  "|---|---|---|---|"]
        for r in entry["reverse"]:
            lines.append(f"| {_reverse_label(r)} | {_pct(r['refusal_rate'])} | {r['ce']:.2f} | {r['distinct']:.2f} |")
    lines += ["", "## Examples", ""]
    if b is not None and results["config"]["examples"]:
        from qwen_sae_jax.steer.refusal_matcher import is_refusal

        window = results["config"]["window"]
        entry = results["per_hook"][b["hook"]]
        rows = [r for r in entry["steer"] if r["alpha"] == b["alpha"]]
        top_row = next(r for r in rows if r["kind"] == "top" and r["feature"] == b["feature"])
        rnd_row = next((r for r in rows if r["kind"] == "random"), None)
        chosen = [i for i, t in enumerate(base["harmless_texts"]) if not is_refusal(t, window)]
        chosen = chosen[:results["config"]["examples"]]
        lines += [f"The first {len(chosen)} held-out harmless prompts that the unsteered model does not refuse, "
                  f"steered with feature {b['feature']} at `{b['hook']}` (alpha {b['alpha']:g}) and with random "
                  f"feature {rnd_row['feature'] if rnd_row else '-'} at the same alpha:", ""]
        for i in chosen:
            lines.append(f"- prompt: {_quote(results['eval_prompts']['harmless'][i])}")
            lines.append(f"  - unsteered: {_quote(base['harmless_texts'][i])}")
            lines.append(f"  - feature {b['feature']}: {_quote(top_row['texts'][i])}")
            if rnd_row is not None:
                lines.append(f"  - random {rnd_row['feature']}: {_quote(rnd_row['texts'][i])}")
    lines += ["", "Plots: `refusal_vs_alpha.png`, `fluency_vs_alpha.png`, `reverse.png`; "
                  "all numbers: `report.json`.", ""]
    return "\n".join(lines)


def check_out_dir(out_dir: str | os.PathLike) -> None:
    """Refuse an ``out_dir`` that is a file or a folder holding something other than an earlier report (it is
    replaced as a whole); the CLI calls this before the study runs."""
    from qwen_sae_jax.errors import UserError

    out = Path(out_dir)
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"out_dir {out}: {blocker} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "report.json").is_file():
        raise UserError(f"out_dir {out} is a folder that holds something other than a refusal report (no "
                        "report.json); choose another out_dir (an earlier report there is replaced)")


def write_report(results: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write report.md, report.json and the three PNGs to ``out_dir``; returns their paths. The folder is
    written beside ``out_dir`` and renamed into place when complete (an earlier report there is replaced)."""
    from qwen_sae_jax.atomic import atomic_directory

    out = Path(out_dir)
    check_out_dir(out)
    names = {"json": "report.json", "md": "report.md", "refusal": "refusal_vs_alpha.png",
             "fluency": "fluency_vs_alpha.png", "reverse": "reverse.png"}
    with atomic_directory(out, force=True) as tmp:
        paths = {key: tmp / name for key, name in names.items()}
        atomic_write_text(paths["json"], json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        _curve_plot(results, "refusal_rate", "refusal rate (held-out harmless)", paths["refusal"],
                    results["baseline"]["harmless"]["refusal_rate"])
        _curve_plot(results, "ce", "unsteered CE on completion (nats/tok)", paths["fluency"],
                    results["baseline"]["harmless"]["ce"])
        _reverse_plot(results, paths["reverse"])
        atomic_write_text(paths["md"], markdown(results))
    return {key: out / name for key, name in names.items()}
