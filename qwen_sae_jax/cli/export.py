"""`qwen-sae export --format saelens|sparsify|qwen-scope SRC DST`: JAX SAEs -> PyTorch-ecosystem folders."""
from __future__ import annotations

from pathlib import Path

from qwen_sae_jax.cli.options import check_output_folder, int_at_least
from qwen_sae_jax.errors import UserError

HELP = "export SAEs (a run directory or any SAE path) to SAELens, sparsify or Qwen-Scope files, with a model card"


def add_arguments(parser) -> None:
    parser.add_argument("src", metavar="SRC", help="a training run directory, or an SAE (any supported format)")
    parser.add_argument("dst", metavar="DST", help="output folder (written atomically)")
    parser.add_argument("--format", required=True, choices=["saelens", "sparsify", "qwen-scope"],
                        help="saelens: cfg.json + sae_weights.safetensors (one folder per SAE when several); "
                             "sparsify: DST/<hook point>/cfg.json + sae.safetensors; qwen-scope: DST/layer{N}.sae.pt")
    parser.add_argument("--force", action="store_true", help="replace DST if it exists")
    parser.add_argument("--hook", action="append", metavar="HOOK", help="only SAEs at this hook / name (repeatable)")
    parser.add_argument("--eval", metavar="EVAL", help="eval.json (or its folder) from `qwen-sae eval`, put in the "
                                                       "README model card; default: SRC/eval/eval.json if present")
    parser.add_argument("--density", metavar="FILE",
                        help="feature_density.safetensors from `qwen-sae eval` (SAELens sparsity.safetensors); "
                             "default: SRC/eval/feature_density.safetensors if present")
    parser.add_argument("--src-format", choices=["native", "saelens", "sparsify", "qwen-scope"],
                        help="format of SRC (default: auto-detected)")
    parser.add_argument("--k", type=int_at_least(1), help="TopK k of Qwen-Scope SRC files that do not state it")


def _eval_table(path: Path | None, names: list[str]) -> str | None:
    if path is None:
        return None
    from qwen_sae_jax.eval.report import JOINT_COLUMNS, load_rows, markdown_table, sort_key

    file = path / "eval.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"--eval {path}: no eval.json there (run `qwen-sae eval` first)")
    try:
        rows, joint = load_rows(file)
    except (ValueError, KeyError) as err:
        raise UserError(f"{file} is not an eval.json written by `qwen-sae eval`: {err}") from None
    rows = sorted((r for r in rows if r["name"] in names), key=sort_key)
    if not rows:
        return None
    table = markdown_table(rows)
    joint = [j for j in joint if set(j["saes"]) <= set(names)]
    if joint:
        table += "\n\nAll SAEs of a layer spliced together:\n\n" + markdown_table(joint, JOINT_COLUMNS)
    return table


def _densities(path: Path | None) -> dict:
    if path is None:
        return {}
    from qwen_sae_jax.interop.tensors import read_safetensors

    if not path.is_file():
        raise UserError(f"--density {path}: no such file (feature_density.safetensors from `qwen-sae eval`)")
    return read_safetensors(path)[0]


def run(args) -> int:
    from qwen_sae_jax.atomic import check_destination
    from qwen_sae_jax.interop import export_saes, load_saes
    from qwen_sae_jax.interop.load import matches_hook

    check_output_folder(args.dst, "DST")
    if Path(args.src).exists() and Path(args.dst).resolve() in (Path(args.src).resolve(),
                                                                *Path(args.src).resolve().parents):
        raise UserError(f"DST {args.dst} is SRC or a folder holding it; replacing it would delete SRC: "
                        "choose another DST")
    check_destination(args.dst, args.force)          # before any SAE is read
    src = Path(args.src)
    saes = load_saes(src, args.src_format, k=args.k)
    if args.hook:
        saes = {n: s for n, s in saes.items() if any(matches_hook(n, h) or s.cfg.hook_name == h for h in args.hook)}
        if not saes:
            raise UserError(f"no SAE matches --hook {' '.join(args.hook)}")
    default_eval = src / "eval"
    eval_path = Path(args.eval) if args.eval else (default_eval if (default_eval / "eval.json").is_file() else None)
    density_path = Path(args.density) if args.density else (
        default_eval / "feature_density.safetensors"
        if (default_eval / "feature_density.safetensors").is_file() else None)
    context_size = None
    if (src / "config.yaml").is_file() and (src / "saes").is_dir():
        from qwen_sae_jax.config import load_config
        from qwen_sae_jax.train.config import TrainConfig

        context_size = load_config(TrainConfig, src / "config.yaml").data.ctx_len
    densities = _densities(density_path)
    dst = export_saes(saes, args.dst, args.format, force=args.force,
                      eval_table_md=_eval_table(eval_path, list(saes)),
                      log_densities={n: d for n, d in densities.items() if n in saes}, context_size=context_size)
    files = sorted(p.relative_to(dst) for p in Path(dst).rglob("*") if p.is_file())
    print(f"exported {len(saes)} SAE(s) to {dst} ({args.format}):")
    for f in files:
        print(f"  {f}")
    return 0
