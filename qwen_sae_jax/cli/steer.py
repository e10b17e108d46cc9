"""`qwen-sae steer`: generate with and without steering by SAE features and print both side by side."""
from __future__ import annotations

import argparse
import itertools
import textwrap

from qwen_sae_jax.cli.options import finite_float, float32_float, int_at_least
from qwen_sae_jax.errors import UserError

HELP = "steer generation with SAE features (add direction / clamp / scale / ablate); prints unsteered vs steered"

EPILOG = """\
examples:
  qwen-sae steer --sae runs/tiny --hook layers.2 --feature 123 --alpha 8 --prompt "How do I bake bread?"
  qwen-sae steer --sae runs/tiny/saes/layers.2__topk-k32 --feature 123 --mode ablate --prompt "..."
  qwen-sae steer --sae runs/tiny --hook 'layers.[12]' --feature layers.1:5 --feature layers.2:9 --alpha -4 ...
  qwen-sae steer --sae Qwen/SAE-Res-Qwen3.5-2B-Base-W32K-L0_100 --hook layers.10 --feature 77 --alpha 8 ...
      (a hub repo id: only layer 10's file is downloaded; the model defaults to the release's backbone)

--alpha means, per --mode: add (default): the L2 norm of the added vector (the feature's decoder row is
unit-normalised; with --raw-direction the raw row is used and alpha is the change of the feature's
activation); set: the value the feature is clamped to; scale: the factor it is multiplied by; ablate:
not used (the feature is set to 0). Clamping keeps the SAE error term, so only that feature changes.
"""

MODES = ("add", "set", "scale", "ablate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--sae", action="append", required=True, metavar="PATH|REPO_ID",
                        help="an SAE (any supported format), a training run directory, or a Hugging Face repo id "
                             "(owner/name; only the --hook SAEs' files are downloaded) (repeatable)")
    parser.add_argument("--hook", action="append", metavar="HOOK",
                        help="hook point(s) whose SAE to use (names, aliases, globs); needed when PATH holds several "
                             "(a Qwen-Scope release: layers.N or blocks.N.hook_resid_post is layer N's file)")
    parser.add_argument("--revision", help="branch, tag or commit of the hub repo ids given to --sae (none: main)")
    parser.add_argument("--variant",
                        help="SAE variant when a run directory has several per hook (saes/<hook>__<variant>)")
    parser.add_argument("--feature", action="append", required=True, metavar="[HOOK:]INDEX",
                        help="feature index (repeatable); prefix HOOK: when several SAEs are loaded")
    parser.add_argument("--alpha", type=float32_float, help="steering strength (see below); required except for ablate")
    parser.add_argument("--mode", choices=MODES, default="add", help="how the features are applied")
    parser.add_argument("--where", choices=("all", "prompt", "generated"), default="all",
                        help="positions steered: every one, the prompt only, or generated tokens only")
    parser.add_argument("--raw-direction", action="store_true",
                        help="mode add: use the raw decoder row instead of the unit-normalised one")
    parser.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
    parser.add_argument("--model", help="'tiny', a local HF directory or a hub id (default: the SAEs' model_name; "
                                        "a Qwen-Scope release: its backbone)")
    parser.add_argument("--no-chat", action="store_true", help="continue the raw prompt instead of a chat user turn")
    parser.add_argument("--max-new-tokens", type=int_at_least(1), default=48, help="tokens to generate")
    parser.add_argument("--temperature", type=finite_float, default=0.0, help="0 = greedy")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (same for both columns)")
    parser.add_argument("--width", type=int_at_least(43), default=100,
                        help="total width of the side-by-side output (two columns of at least 20 characters)")


def parse_feature(spec: str, saes: dict) -> tuple[str, int]:
    """``(hook, index)`` for ``INDEX`` (one SAE loaded) or ``HOOK:INDEX``."""
    hook, _, index = spec.rpartition(":")
    try:
        feature = int(index)
    except ValueError:
        raise UserError(f"--feature {spec!r} must be an integer index, optionally prefixed by HOOK:") from None
    if not hook:
        if len(saes) != 1:
            raise UserError(f"--feature {spec!r}: several SAEs are loaded ({', '.join(saes)}); write HOOK:{feature}")
        hook = next(iter(saes))
    from qwen_sae_jax.steer.sources import canonical_hook

    hook = canonical_hook(hook)
    if hook not in saes:
        raise UserError(f"--feature {spec!r}: no SAE loaded at hook {hook}; hooks with an SAE: {', '.join(saes)}")
    return hook, feature


def build_steering(saes: dict, features: list[tuple[str, int]], mode: str, alpha: float | None, where: str,
                   raw_direction: bool = False) -> list:
    """The steerings for ``features`` [(hook, index)] in ``mode`` (see the CLI help)."""
    from qwen_sae_jax.steer.interventions import ablate_features, clamp_features, steer_feature

    if mode == "ablate":
        if alpha is not None:
            raise UserError("--alpha is not used with --mode ablate (the features are set to 0)")
    elif alpha is None:
        raise UserError(f"--mode {mode} needs --alpha")
    out: list = []
    for hook, group in itertools.groupby(sorted(features), key=lambda hf: hf[0]):
        indices = [f for _, f in group]
        sae = saes[hook]
        if mode == "add":
            assert alpha is not None  # checked above
            out.extend(steer_feature(sae, f, alpha, where=where, normalize=not raw_direction) for f in indices)
        elif mode == "ablate":
            out.append(ablate_features(sae, indices, where=where))
        else:
            assert alpha is not None  # checked above
            out.append(clamp_features(sae, indices, alpha, mode=mode, where=where))
    return out


def describe(mode: str, alpha: float | None, raw_direction: bool = False) -> str:
    if mode == "ablate":
        return "ablate"
    if mode == "add":
        return f"add alpha={alpha:g}" + (" (raw row)" if raw_direction else "")
    return f"set to {alpha:g}" if mode == "set" else f"scale x{alpha:g}"


def side_by_side(left: str, right: str, width: int, titles: tuple[str, str]) -> str:
    col = max(20, (width - 3) // 2)
    wrap = lambda text: [line for para in (text or "(empty)").split("\n")  # noqa: E731
                         for line in (textwrap.wrap(para, col, replace_whitespace=False) or [""])]
    a, b = wrap(left), wrap(right)
    rows = [f"{titles[0][:col]:<{col}} | {titles[1][:col]}", f"{'-' * col}-+-{'-' * col}"]
    rows += [f"{x:<{col}} | {y}".rstrip() for x, y in itertools.zip_longest(a, b, fillvalue="")]
    return "\n".join(rows)


def run(args) -> int:
    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.steer.interventions import interventions, validate
    from qwen_sae_jax.steer.sources import load_hook_saes, model_name_of

    if any(not p.strip() for p in args.prompt):
        raise UserError("--prompt must not be empty")
    saes = load_hook_saes(args.sae, args.hook, args.variant, revision=args.revision, announce=print)
    features = [parse_feature(spec, saes) for spec in args.feature]
    steering = build_steering(saes, features, args.mode, args.alpha, args.where, args.raw_direction)
    lm = load_model(model_name_of(saes, args.model))
    steering = validate(lm, steering)      # every hook exists in this model and has the SAEs' width
    kwargs = dict(max_new_tokens=args.max_new_tokens, chat=not args.no_chat, temperature=args.temperature,
                  seed=args.seed)
    clean = lm.generate(args.prompt, **kwargs)
    steered = lm.generate(args.prompt, interventions=interventions(steering), **kwargs)
    what = ", ".join(f"{h}:{f}" for h, f in features)
    how = describe(args.mode, args.alpha, args.raw_direction)
    print(f"model {lm.name}; steering {what}: {how}, positions: {args.where}")
    for prompt, a, b in zip(args.prompt, clean, steered):
        print(f"\n>>> {prompt}")
        print(side_by_side(a, b, args.width, ("unsteered", f"steered ({how})")))
    return 0
