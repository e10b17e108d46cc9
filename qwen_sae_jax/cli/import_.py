"""`qwen-sae import SRC DST`: SAELens / sparsify / Qwen-Scope SAEs -> native JAX SAE folders.

SRC is a local file / folder or a Hugging Face repo id (``Qwen/SAE-Res-Qwen3.5-2B-Base-W32K-L0_100``): with
``--layer N`` / ``--hook H`` only that SAE's files are downloaded (into the HF cache; ``HF_HUB_OFFLINE=1``
uses the cache only). A local path wins over a repo id of the same name.
"""
from __future__ import annotations

from pathlib import Path

from qwen_sae_jax.cli.options import check_output_folder, finite_float, int_at_least
from qwen_sae_jax.errors import UserError

HELP = "import SAELens, sparsify or Qwen-Scope SAEs as native JAX SAE folders (.pt read with weights_only)"


def add_arguments(parser) -> None:
    parser.add_argument("src", metavar="SRC", help="an SAE file/folder, or a folder of them (sparsify repository, "
                                                   "Qwen-Scope layer files, multi-SAE SAELens export), or a "
                                                   "Hugging Face repo id (owner/name; see `qwen-sae releases`)")
    parser.add_argument("dst", metavar="DST", help="native SAE folder (one SAE) or folder of native SAE folders")
    parser.add_argument("--format", choices=["native", "saelens", "sparsify", "qwen-scope"],
                        help="format of SRC (default: auto-detected)")
    parser.add_argument("--hook", help="import only this member (folder name or hook name)")
    parser.add_argument("--layer", type=int_at_least(0),
                        help="import only layer{N}.sae.pt of a Qwen-Scope folder or repo "
                             "(from a repo only that file and the README are downloaded)")
    parser.add_argument("--revision", help="branch, tag or commit of a hub repo id SRC (none: main)")
    parser.add_argument("--k", type=int_at_least(1), help="TopK k of Qwen-Scope files that do not state it")
    parser.add_argument("--norm-scaling-factor", type=finite_float,
                        help="dataset scaling factor of SAELens SAEs with normalize_activations="
                             "expected_average_only_in (folded into the weights)")
    parser.add_argument("--model", help="set the SAEs' model_name (what load_model takes) when the files lack it")
    parser.add_argument("--force", action="store_true", help="replace DST if it exists")


def run(args) -> int:
    from qwen_sae_jax.atomic import atomic_directory, check_destination
    from qwen_sae_jax.interop import load_sae, load_saes
    from qwen_sae_jax.sae import save_sae

    check_output_folder(args.dst, "DST")
    if Path(args.src).exists() and Path(args.dst).resolve() in (Path(args.src).resolve(),
                                                                *Path(args.src).resolve().parents):
        raise UserError(f"DST {args.dst} is SRC or a folder holding it; replacing it would delete SRC: "
                        "choose another DST")
    check_destination(args.dst, args.force)          # before anything is read or downloaded
    kw = dict(k=args.k, norm_scaling_factor=args.norm_scaling_factor)
    if args.hook is not None or args.layer is not None:
        sae = load_sae(args.src, args.format, hook=args.hook, layer=args.layer, revision=args.revision, **kw)
        saes = {sae.cfg.hook_name or Path(args.src).name: sae}
    else:
        saes = load_saes(args.src, args.format, revision=args.revision, **kw)
    if args.model:
        saes = {n: s.replace(cfg=s.cfg.replace(model_name=args.model)) for n, s in saes.items()}
    hooks = [s.cfg.hook_name for s in saes.values()]
    names = {n: (s.cfg.hook_name if s.cfg.hook_name and hooks.count(s.cfg.hook_name) == 1 else n)
             for n, s in saes.items()}
    with atomic_directory(args.dst, force=args.force) as tmp:
        if len(saes) == 1:
            save_sae(next(iter(saes.values())), tmp, overwrite=True)
        else:
            for name, sae in saes.items():
                save_sae(sae, tmp / names[name])
    print(f"imported {len(saes)} SAE(s) into {args.dst}:")
    for name, sae in saes.items():
        c = sae.cfg
        where = "" if len(saes) == 1 else f"{names[name]}/  "
        print(f"  {where}{c.architecture} d_in={c.d_in} d_sae={c.d_sae} k={c.k} hook={c.hook_name or '?'} "
              f"model={c.model_name or '?'}")
    return 0
