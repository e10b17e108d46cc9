"""`qwen-sae dashboard RUN_DIR --out DIR`: a static, offline HTML dashboard of every SAE's features."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from qwen_sae_jax.cli.options import check_output_folder, int_at_least
from qwen_sae_jax.errors import UserError

HELP = "Write a static HTML dashboard (max-activating examples, density, logit lens) of the SAEs in a run."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from qwen_sae_jax.analysis.dashboard import MINIMUMS, DashboardConfig
    from qwen_sae_jax.config import field_docs

    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory (saes/ + config.yaml), or any "
                        "SAE folder / file / collection that load_sae reads")
    parser.add_argument("--out", required=True, help="output folder (a previous dashboard there is replaced)")
    parser.add_argument("--saes", nargs="+", metavar="PATTERN",
                        help="only these SAEs: names, hook names or SAELens-style aliases, globs allowed (e.g. "
                             "'layers.1*' layers.2.mlp blocks.3.hook_attn_out)")
    parser.add_argument("--files", nargs="+", metavar="FILE",
                        help="corpus files (.jsonl/.json/.parquet/plain text; 'tiny:heldout/*.jsonl'). Default: "
                             "the run's training data (config.yaml data.files / data.dataset)")
    parser.add_argument("--text-column", default="text", help="JSON/parquet column holding the text")
    parser.add_argument("--text-unit", default="paragraph", choices=["document", "paragraph", "line"],
                        help="how plain-text files are cut into documents")
    parser.add_argument("--model", help="model override ('tiny', HF directory, hub id); default: the run's")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="model compute dtype")
    parser.add_argument("--title", default=None, help="page title (default: 'SAE features: <run dir name>')")
    docs = field_docs(DashboardConfig)
    for f in dataclasses.fields(DashboardConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=docs.get(f.name))
        else:
            kind = int_at_least(MINIMUMS[f.name]) if f.name in MINIMUMS else int
            parser.add_argument(flag, type=kind, default=f.default, help=docs.get(f.name))


def _documents(args, run_cfg):
    from qwen_sae_jax.data.text import TextSourceConfig, open_documents

    if args.files:
        folders = [f for f in args.files if Path(f).is_dir()]
        if folders:
            raise UserError(f"--files {folders[0]} is a folder; give files or globs such as "
                            f"{Path(folders[0]) / '*.jsonl'}")
        source = TextSourceConfig(files=list(args.files), text_column=args.text_column, text_unit=args.text_unit)
        name = ", ".join(args.files)
    elif run_cfg is not None:
        source = run_cfg.data
        name = source.dataset or ", ".join(source.files)
        if source.chat:
            raise UserError("the run trained on chat messages (data.chat); pass plain-text corpus files with --files")
    else:
        raise UserError(f"{args.run_dir} is not a training run (no config.yaml), so it names no corpus: "
                        "pass --files")
    docs = open_documents(source)
    return docs, name


def run(args: argparse.Namespace) -> int:
    from qwen_sae_jax.analysis.dashboard import MARKER, DashboardConfig, build_dashboard, slug
    from qwen_sae_jax.analysis.loading import load_model_and_saes, run_config

    config = DashboardConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DashboardConfig)})
    out_dir = Path(args.out)
    check_output_folder(out_dir, "--out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise UserError(f"--out {out_dir} is a folder that holds something other than a qwen-sae dashboard; choose "
                        "another --out (an earlier dashboard there is replaced)")
    if not Path(args.run_dir).exists():
        raise UserError(f"no such file or folder: {args.run_dir}")
    run_cfg = run_config(args.run_dir)
    docs, corpus_name = _documents(args, run_cfg)       # bad corpus files are refused before the model loads
    lm, saes = load_model_and_saes(args.run_dir, args.saes, args.model, args.dtype)
    if config.ctx_len > lm.config.max_position_embeddings:
        raise UserError(f"--ctx-len {config.ctx_len} is longer than model {lm.name}'s max_position_embeddings "
                        f"({lm.config.max_position_embeddings}); valid: 2..{lm.config.max_position_embeddings}")
    summary_path = Path(args.run_dir) / "summary.json"
    run_summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    title = args.title or f"SAE features: {Path(args.run_dir).resolve().name}"
    print(f"dashboard: {len(saes)} SAE(s) on {lm.name}, up to {config.max_tokens:,} tokens of {corpus_name}")
    start = time.time()

    def progress(done, total):
        if sys.stdout.isatty():
            print(f"\r  {done}/{total} windows", end="", flush=True)

    out = build_dashboard(lm, saes, docs, args.out, config, run_summary=run_summary, title=title,
                          corpus_name=corpus_name, progress=progress)
    if sys.stdout.isatty():
        print()
    meta = json.loads((out / "dashboard.json").read_text())
    print(f"wrote {out}/index.html ({meta['n_tokens']:,} tokens in {meta['n_windows']} windows, "
          f"{time.time() - start:.1f} s); open it in a browser, no server needed")
    for name in saes:
        print(f"  {name}: {out / (slug(name) + '.html')}")
    return 0
