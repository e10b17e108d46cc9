"""`qwen-sae redundancy FILE [FILE ...] --sae SAE`: feature footprint, coverage curve and redundancy R(D)."""
from __future__ import annotations

import argparse

from qwen_sae_jax.cli.options import int_at_least

HELP = ("Benchmark redundancy from SAE features: footprint |F(D)|, coverage curve c_n and R(D) = AUC * N / |F(D)| "
        "per text set, and footprint overlaps between sets.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from qwen_sae_jax.cli.classify import add_common

    parser.add_argument("files", nargs="+", metavar="FILE", help="text sets (one file each)")
    add_common(parser)
    parser.add_argument("--plot", metavar="PNG", help="write the coverage curves (c_n against n/N) to this PNG")
    parser.add_argument("--n-texts", type=int_at_least(1),
                        help="use this many texts of each set (a seeded random sample): R "
                             "grows with N, so compare sets at equal N")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --n-texts sample")


def _plot(curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for label, r in curves.items():
        x = np.arange(1, r.n_texts + 1) / r.n_texts
        ax.plot(x, r.curve, label=f"{label} (R={r.redundancy:.3g})")
    ax.set_xlabel("subset size n / N")
    ax.set_ylabel("coverage c_n = E|F(S_n)| / |F(D)|")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from qwen_sae_jax.atomic import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from qwen_sae_jax.analysis.loading import load_model_and_sae
    from qwen_sae_jax.analysis.redundancy import footprint_overlap, redundancy
    from qwen_sae_jax.cli.classify import check_inputs, footprints_of, write_json

    check_inputs(args, args.files)
    lm, name, sae = load_model_and_sae(args.sae, args.hook, args.model, args.dtype)
    fired = {path: footprints_of(args, lm, sae, path).fired for path in args.files}
    if args.n_texts is not None:
        import numpy as np

        from qwen_sae_jax.errors import UserError

        small = {p: f.shape[0] for p, f in fired.items() if f.shape[0] < args.n_texts}
        if small:
            raise UserError(f"--n-texts {args.n_texts} must be at most the size of every set "
                            f"(smaller: {', '.join(f'{p} has {n}' for p, n in small.items())})")
        rng = np.random.default_rng(args.seed)
        fired = {p: f[np.sort(rng.choice(f.shape[0], args.n_texts, replace=False))] for p, f in fired.items()}
    results = {path: redundancy(f) for path, f in fired.items()}
    print(f"SAE {name} ({sae.cfg.hook_name}, d_sae {sae.cfg.d_sae}) on {lm.name}")
    width = max(len(p) for p in results)
    print(f"{'text set':<{width}} {'N':>6} {'|F(D)|':>7} {'AUC':>6} {'R(D)':>8}  c_n at n = N/4, N/2")
    for path, r in results.items():
        quarter, half = r.curve[max(r.n_texts // 4, 1) - 1], r.curve[max(r.n_texts // 2, 1) - 1]
        print(f"{path:<{width}} {r.n_texts:>6} {r.footprint:>7} {r.auc:>6.3f} {r.redundancy:>8.4g}  "
              f"{quarter:.3f}, {half:.3f}")
    overlaps = {}
    if len(fired) > 1:
        print("footprint overlap |F(A) & F(B)| / |F(A)| (row A, column B):")
        for a in fired:
            overlaps[a] = {b: footprint_overlap(fired[a], fired[b]) for b in fired}
            print(f"  {a:<{width}} " + " ".join(f"{overlaps[a][b]:>6.3f}" for b in fired))
    if args.plot:
        _plot(results, args.plot)
        print(f"wrote {args.plot}")
    if args.json:
        write_json(args.json, {"sae": name, "hook": sae.cfg.hook_name, "model": lm.name, "threshold": args.threshold,
                               "sets": {p: r.to_dict() for p, r in results.items()}, "overlap": overlaps})
        print(f"wrote {args.json}")
    return 0
