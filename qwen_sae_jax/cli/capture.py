"""`qwen-sae capture`: run the model on texts and save the activations at hook points as .npy files."""
from __future__ import annotations

import os

import numpy as np

from qwen_sae_jax.cli.options import check_output_folder
from qwen_sae_jax.errors import UserError

HELP = "capture activations at hook points (layers.N, layers.N.mlp, globs, SAELens aliases) to .npy files"


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="tiny", help="'tiny', a local HF directory, or a hub id")
    parser.add_argument("--hooks", nargs="+", required=True, metavar="HOOK",
                        help="hook names, aliases or globs, e.g. layers.1 'layers.*.mlp' blocks.0.hook_resid_post")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a text to run (repeatable)")
    src.add_argument("--file", help="a UTF-8 file with one text per line (empty lines skipped)")
    src.add_argument("--tokens", action="append", help="token ids separated by spaces or commas (repeatable)")
    parser.add_argument("--out", default="activations",
                        help="directory for <hook>.npy, input_ids.npy, attention_mask.npy (written "
                             "atomically; an earlier capture there is replaced)")
    parser.add_argument("--chat", action="store_true", help="render each text as a user turn with the chat template")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")


def _texts(args) -> list[str]:
    if args.file:
        from qwen_sae_jax.data.text import read_utf8

        if os.path.isdir(args.file):
            raise UserError(f"--file {args.file} is a folder; give a UTF-8 text file (one text per line)")
        if not os.path.isfile(args.file):
            raise UserError(f"--file {args.file} does not exist")
        texts = [line.rstrip("\r") for line in read_utf8(args.file).split("\n") if line.strip()]
        if not texts:
            raise UserError(f"--file {args.file} has no non-empty lines")
        return texts
    if any(not t.strip() for t in args.text):
        raise UserError("--text must not be empty")
    return list(args.text)


def _token_lists(args) -> list[list[int]]:
    out = []
    for spec in args.tokens:
        try:
            ids = [int(t) for t in spec.replace(",", " ").split()]
        except ValueError:
            raise UserError(f"--tokens {spec!r} must be integers separated by spaces or commas") from None
        if not ids:
            raise UserError("--tokens got an empty list")
        out.append(ids)
    return out


def _check_out(out: str) -> None:
    """Refuse, before any work, an --out that is a file or a folder holding something other than an earlier
    capture (the output folder is replaced as a whole)."""
    check_output_folder(out, "--out")
    if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, "input_ids.npy")):
        raise UserError(f"--out {out} is a folder that holds something other than a capture (no input_ids.npy); "
                        "choose another --out (an earlier capture there is replaced)")


def run(args) -> int:
    from qwen_sae_jax.atomic import atomic_directory
    from qwen_sae_jax.lm import load_model, pad_batch

    _check_out(args.out)
    texts = None if args.tokens else _texts(args)       # bad input files are refused before the model loads
    lm = load_model(args.model, dtype=args.dtype)
    names = lm.resolve_hooks(args.hooks)
    if texts is None:  # --tokens
        lists = _token_lists(args)
        vocab = lm.config.vocab_size
        bad = next((t for ids in lists for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise UserError(f"--tokens: token id {bad} is out of range for model {lm.name} (valid: 0..{vocab - 1})")
        ids, mask = pad_batch(lists, pad_id=lm.pad_token_id, side="right")
    else:
        ids, mask = lm.tokenize(texts, padding_side="right", chat=args.chat)
    acts = lm.capture(ids, names, attention_mask=mask)

    valid = mask.astype(bool)
    print(f"model {lm.name}: {lm.config.num_hidden_layers} layers, d_model {lm.config.hidden_size}; "
          f"batch {ids.shape[0]} x {ids.shape[1]} tokens ({int(valid.sum())} real)")
    print(f"{'hook':<24} {'shape':<18} {'mean L2 norm':>12} {'max |x|':>10}  file")
    rows = []
    with atomic_directory(args.out, force=True) as tmp:      # complete or absent; an earlier capture is replaced
        np.save(tmp / "input_ids.npy", ids)
        np.save(tmp / "attention_mask.npy", mask)
        for name in names:
            arr = np.asarray(acts[name], dtype=np.float32)  # [B, T, D]
            np.save(tmp / f"{name}.npy", arr)
            rows.append((name, arr))
    for name, arr in rows:
        path = os.path.join(args.out, f"{name}.npy")
        real = arr[valid]
        print(f"{name:<24} {str(tuple(arr.shape)):<18} {np.linalg.norm(real, axis=-1).mean():>12.4f} "
              f"{np.abs(real).max():>10.4f}  {path}")
    return 0
