"""`qwen-sae` command line.

Each subcommand lives in its own module ``qwen_sae_jax/cli/<name>.py`` exposing

    HELP: str                                  one line shown in `qwen-sae --help`
    def add_arguments(parser) -> None          documents every option
    def run(args) -> int | None                the work; returns an exit code

Modules are imported only when their subcommand runs, so `qwen-sae --help` is fast.
Errors derived from ``qwen_sae_jax.errors.UserError``, argparse's own errors (a wrong type, a missing or unknown
option) and a path the system refuses (missing, a folder where a file is wanted, no permission, disk full) are
printed as one line ``qwen-sae COMMAND: error: ...`` (no traceback, no usage block) and exit with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys

# subcommand -> module under qwen_sae_jax.cli (kept in the order shown by --help)
SUBCOMMANDS = {
    "demo": "demo",
    "capture": "capture",
    "train": "train",
    "sft": "sft",
    "rl": "rl",
    "synthesize": "synthesize",
    "codeswitch": "codeswitch",
    "eval": "eval",
    "export": "export",
    "import": "import_",
    "releases": "releases",
    "steer": "steer",
    "refusal": "refusal",
    "contrast": "contrast",
    "dashboard": "dashboard",
    "classify": "classify",
    "redundancy": "redundancy",
}


def _available() -> dict[str, object]:
    found: dict[str, object] = {}
    for name, mod in SUBCOMMANDS.items():
        try:
            spec = importlib.util.find_spec(f"qwen_sae_jax.cli.{mod}")
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            found[name] = mod
    return found


class _Parser(argparse.ArgumentParser):
    """argparse's errors as one line naming the command and pointing at its help, instead of a usage block:
    ``qwen-sae contrast: error: argument --top: invalid int value: 'abc' (see qwen-sae contrast --help)``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # values such as -1e-3, -.5 or -inf are values, not options (argparse knows only -4 and -0.5), so
        # `--alpha -1e3` works and `--alpha -inf` is refused by the option's type in one line
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$",
                                                   re.IGNORECASE)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# path errors of the file system that are the user's input, printed as one line like a UserError
_PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def _path_error(err: OSError) -> str | None:
    import errno

    if isinstance(err, _PATH_ERRORS) or err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG):
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror or err}{where}"
    return None


def build_parser(load_all: bool = False, only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qwen-sae",
        description="Sparse autoencoders on Qwen3 in JAX: train, evaluate, export and steer.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in _available().items():
        if only is not None and name != only and not load_all:
            # cheap placeholder so `qwen-sae --help` lists every command without importing it
            sub.add_parser(name, help="(see qwen-sae %s --help)" % name, add_help=False)
            continue
        module = importlib.import_module(f"qwen_sae_jax.cli.{mod}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_module=module, _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from qwen_sae_jax.errors import UserError

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(load_all=command is None, only=command)
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `qwen-sae train CONFIG --resume a=1 b=2`: overrides given after an option land here; accept them
        # for commands that take overrides, reject anything else as argparse would
        if isinstance(getattr(args, "overrides", None), list) and not any(a.startswith("-") for a in extra):
            args.overrides += extra
        else:
            getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return 2
    try:
        code = args._module.run(args)
    except UserError as err:
        print(f"qwen-sae {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        message = _path_error(err)
        if message is None:
            raise
        print(f"qwen-sae {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qwen-sae {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
