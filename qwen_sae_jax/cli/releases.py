"""`qwen-sae releases`: the Qwen-Scope SAE releases on the Hugging Face hub (qwen_sae_jax/interop/releases.py).

Each row is one hub repository of ``layer{N}.sae.pt`` residual-stream TopK SAEs, loadable by its repo id:
``qwen-sae import REPO_ID DST --layer N`` or ``load_sae(REPO_ID, layer=N)``; the SAEs get the backbone as
their model, so ``qwen-sae eval`` / ``steer`` need no ``--model``.
"""
from __future__ import annotations

HELP = "list the Qwen-Scope SAE releases on the Hugging Face hub (repo id, backbone, width, k, layers)"

COLUMNS = ("repo id", "backbone (model_name)", "checkpoint", "site", "d_model", "d_sae", "k", "layers")


def add_arguments(parser) -> None:
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (as in docs/interop.md)")
    parser.add_argument("--numbering", action="store_true",
                        help="add a column saying how each release's 0-based layer numbering was established")


def _rows(with_numbering: bool) -> list[tuple[str, ...]]:
    from qwen_sae_jax.interop.releases import RELEASES

    rows = []
    for r in RELEASES:
        row = (r.repo_id, r.model_id, r.checkpoint, r.site, str(r.d_model), str(r.d_sae), str(r.k),
               f"{r.n_layers} (layer0-layer{r.n_layers - 1})")
        rows.append(row + ((r.numbering,) if with_numbering else ()))
    return rows


def format_table(rows: list[tuple[str, ...]], header: tuple[str, ...], markdown: bool) -> str:
    """Aligned plain-text columns, or a Markdown table."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    fmt = lambda row: "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()   # noqa: E731
    return "\n".join([fmt(header), "-" * len(fmt(header)), *map(fmt, rows)])


def run(args) -> int:
    from qwen_sae_jax.interop.releases import RELEASES

    header = COLUMNS + (("layer numbering",) if args.numbering else ())
    print(format_table(_rows(args.numbering), header, args.markdown))
    print(f"\n{len(RELEASES)} releases over {len({r.model_id for r in RELEASES})} backbones; every one holds "
          "layer{N}.sae.pt for each layer N of its backbone (residual stream after decoder layer N = hook "
          "layers.N). Load one: qwen-sae import REPO_ID DST --layer N")
    return 0
