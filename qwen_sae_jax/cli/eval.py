"""`qwen-sae eval RUN_DIR|SAE_PATH|REPO_ID`: reconstruction and spliced-model metrics, tables (md/csv/json) and plots.

A Hugging Face repo id (``owner/name``, no local path of that name) is read from the hub: with ``--hook`` only
those hooks' files are downloaded (`interop.hub`); without, every SAE of the repo (one line says how many files).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from qwen_sae_jax.cli.options import check_output_folder, finite_float, int_at_least
from qwen_sae_jax.errors import UserError

HELP = ("evaluate SAEs (a run directory, any SAE path/format, or a hub repo id): FVU, L0, dead latents, "
        "CE loss recovered, KL")


def add_arguments(parser) -> None:
    parser.add_argument("src", metavar="RUN_DIR|SAE_PATH|REPO_ID",
                        help="a training run directory (all its SAEs), an SAE in any supported format "
                             "(native, SAELens, sparsify, Qwen-Scope file or folder), or a Hugging Face repo id "
                             "(owner/name, e.g. a Qwen-Scope release: `qwen-sae releases`; only the --hook SAEs' "
                             "files are downloaded)")
    parser.add_argument("--data", nargs="+", metavar="FILE",
                        help="held-out text files/globs (.txt, .jsonl, ...; 'tiny:heldout/*.jsonl' for the embedded "
                             "ones). Default: a run's held-out documents (eval.holdout_every), else the embedded "
                             "held-out texts")
    parser.add_argument("--model", help="model for the SAEs ('tiny', HF dir, hub id); default: the run's / the "
                                        "SAEs' model_name (a Qwen-Scope release: its backbone)")
    parser.add_argument("--out", help="output folder, written atomically (a previous evaluation there is replaced); "
                                      "default RUN_DIR/eval, SAE_PATH-eval next to the SAE, or NAME-eval in the "
                                      "current folder for a repo id OWNER/NAME")
    parser.add_argument("--tokens", type=int_at_least(1), default=16384, help="held-out tokens to evaluate")
    parser.add_argument("--batch-size", type=int_at_least(1), default=8, help="sequences per forward")
    parser.add_argument("--ctx-len", type=int_at_least(2),
                        help="tokens per sequence, at most the model's max_position_embeddings (default: the run's "
                             "data.ctx_len, else 128)")
    parser.add_argument("--hook", action="append", metavar="HOOK",
                        help="only SAEs at this hook / with this name (repeatable); of a repo id only these are "
                             "downloaded (a Qwen-Scope release: layers.N or blocks.N.hook_resid_post is layer N), "
                             "without --hook every SAE of it")
    parser.add_argument("--revision", help="branch, tag or commit of a hub repo id (none: main)")
    parser.add_argument("--format", choices=["native", "saelens", "sparsify", "qwen-scope"],
                        help="SAE format (default: auto-detected)")
    parser.add_argument("--k", type=int_at_least(1), help="TopK k of Qwen-Scope files that do not state it")
    parser.add_argument("--include-special", action="store_true", help="also evaluate special-token positions")
    parser.add_argument("--include-first", action="store_true",
                        help="also evaluate the first position of each sequence")
    parser.add_argument("--outlier-factor", type=finite_float,
                        help="leave out positions with a norm above this factor times the median (default: the "
                             "run's filter.norm_outlier_factor, else off)")
    parser.add_argument("--no-joint", action="store_true", help="skip splicing all SAEs of a layer together")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                        help="model compute dtype (default: the run's model.dtype, else float32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out document order")


def _run_config(src: Path):
    """The training config of a run directory, or None for a plain SAE path."""
    if not ((src / "saes").is_dir() and (src / "config.yaml").is_file()):
        return None
    from qwen_sae_jax.config import load_config
    from qwen_sae_jax.train.config import TrainConfig

    return load_config(TrainConfig, src / "config.yaml")


def _select(saes: dict, hooks: list[str] | None) -> dict:
    if not hooks:
        return saes
    from qwen_sae_jax.interop.load import matches_hook

    chosen = {n: s for n, s in saes.items() if any(matches_hook(n, h) or s.cfg.hook_name == h for h in hooks)}
    if not chosen:
        raise UserError(f"no SAE matches --hook {' '.join(hooks)}; available: {', '.join(saes)}")
    return chosen


def _load_saes(args) -> dict:
    """The SAEs to evaluate: from a local path, every one, then those --hook names; from a hub repo id only
    the --hook ones are downloaded (every one without --hook, said in one line)."""
    from qwen_sae_jax.interop import hub, load_saes
    from qwen_sae_jax.interop.load import hub_repo_id

    repo_id = hub_repo_id(args.src, args.revision)
    if repo_id is None:
        return _select(load_saes(args.src, args.format, k=args.k), args.hook)
    return hub.load_saes_from_hub(repo_id, args.format, k=args.k, revision=args.revision, hooks=args.hook,
                                  announce=print)


def _default_out(src: Path, run_cfg, hub: bool) -> Path:
    if hub:
        return Path(src.name + "-eval")                 # owner/NAME -> ./NAME-eval
    if run_cfg is not None or (src / "saes").is_dir():
        return src / "eval"
    return src.with_name(src.name + "-eval")


def _check_out(out: Path) -> None:
    """Refuse, before any work, an --out that is a file or a folder holding something other than an
    earlier evaluation (the output folder is replaced as a whole)."""
    check_output_folder(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not (out / "eval.json").is_file():
        raise UserError(f"--out {out} is a folder that holds something other than an evaluation (no eval.json); "
                        "choose another --out (an earlier evaluation there is replaced)")


def _model_name(args, run_cfg, saes: dict) -> str:
    if args.model:
        return args.model
    if run_cfg is not None:
        return run_cfg.model.name
    names = {s.cfg.model_name for s in saes.values()}
    if len(names) != 1 or "" in names:
        raise UserError(f"the SAEs do not name one model ({sorted(names)}); pass --model")
    return names.pop()


def _batches(args, lm, run_cfg, ecfg):
    from qwen_sae_jax.eval.evaluate import DEFAULT_EVAL_FILES, heldout_batches

    if lm.tokenizer is None:
        raise UserError(f"model {lm.name!r} has no tokenizer, so held-out text cannot be tokenised")
    if args.data:
        return heldout_batches(lm.tokenizer, args.data, ecfg, seed=args.seed), f"--data {' '.join(args.data)}"
    if run_cfg is not None and run_cfg.eval.holdout_every and run_cfg.cache.mode != "read":
        import numpy as np

        from qwen_sae_jax.data.text import open_documents
        from qwen_sae_jax.data.tokens import TokenBatches

        docs = open_documents(run_cfg.data)
        k = run_cfg.eval.holdout_every
        held = [docs[i * k + k - 1] for i in range(len(docs) // k)]   # the training loop's held-out split
        if len(held) >= ecfg.batch_size:
            data_cfg = dataclasses.replace(run_cfg.data, ctx_len=ecfg.ctx_len, batch_size=ecfg.batch_size,
                                           seed=args.seed)
            stream = TokenBatches(lm.tokenizer, data_cfg, docs=held)
            n = -(-ecfg.n_tokens // (ecfg.batch_size * ecfg.ctx_len))
            return [np.asarray(next(stream), np.int32) for _ in range(n)], \
                f"the run's held-out documents (every {k}th, {len(held)} documents)"
    return heldout_batches(lm.tokenizer, DEFAULT_EVAL_FILES, ecfg, seed=args.seed), "the embedded held-out texts"


def run(args) -> int:
    from qwen_sae_jax.atomic import atomic_directory
    from qwen_sae_jax.data.tokens import special_token_ids
    from qwen_sae_jax.eval.evaluate import EvalConfig, evaluate
    from qwen_sae_jax.eval.plots import plot_all
    from qwen_sae_jax.eval.report import render_markdown, write_report
    from qwen_sae_jax.interop.load import hub_repo_id
    from qwen_sae_jax.lm import load_model

    src = Path(args.src)
    run_cfg = _run_config(src)
    out = Path(args.out) if args.out else _default_out(src, run_cfg, hub_repo_id(args.src, args.revision) is not None)
    _check_out(out)                                     # before anything is read or downloaded
    saes = _load_saes(args)
    filt = run_cfg.filter if run_cfg is not None else None
    ecfg = EvalConfig(
        n_tokens=args.tokens, batch_size=args.batch_size,
        ctx_len=args.ctx_len or (run_cfg.data.ctx_len if run_cfg is not None else 128),
        exclude_special=not args.include_special and (filt.special_tokens if filt else True),
        exclude_first=not args.include_first and (filt.first_position if filt else True),
        norm_outlier_factor=args.outlier_factor if args.outlier_factor is not None else
        (filt.norm_outlier_factor if filt else None),
        joint=not args.no_joint)
    lm = load_model(_model_name(args, run_cfg, saes),
                    dtype=args.dtype or (run_cfg.model.dtype if run_cfg is not None else "float32"))
    if ecfg.ctx_len > lm.config.max_position_embeddings:
        raise UserError(f"ctx_len {ecfg.ctx_len} (--ctx-len) is longer than model {lm.name}'s max_position_embeddings "
                        f"({lm.config.max_position_embeddings}); valid: 2..{lm.config.max_position_embeddings}")
    batches, source = _batches(args, lm, run_cfg, ecfg)
    print(f"evaluating {len(saes)} SAE(s) on {lm.name} with {len(batches)} x {ecfg.batch_size} x {ecfg.ctx_len} "
          f"tokens from {source}")
    results = evaluate(lm, saes, batches, ecfg, special_ids=special_token_ids(lm.tokenizer))
    with atomic_directory(out, force=True) as tmp:      # complete or absent; an earlier evaluation is replaced
        paths = write_report(results, tmp, title=f"SAE evaluation: {src}")
        if not args.no_plots:
            paths.update(plot_all(results, tmp))
    paths = {key: out / path.name for key, path in paths.items()}
    print(render_markdown(results, title=f"SAE evaluation: {src}"))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
