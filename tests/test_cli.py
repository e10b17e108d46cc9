"""The `qwen-sae` dispatcher and the one-line user errors."""
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_sae_jax import cli
from qwen_sae_jax.errors import UserError, closest, did_you_mean


def test_closest_and_did_you_mean():
    valid = ["d_sae", "d_in", "learning_rate"]
    assert closest("learnig_rate", valid) == "learning_rate"
    assert "learning_rate" in did_you_mean("learnig_rate", valid)
    assert closest("zzzzzz", valid) is None
    assert did_you_mean("zzzzzz", valid) == ""


COMMANDS = ("demo", "capture", "train", "sft", "rl", "synthesize", "codeswitch", "eval", "export", "import", "releases",
            "steer", "refusal", "contrast", "dashboard", "classify", "redundancy")


def test_help_lists_subcommands(capsys):
    code = cli.main([])
    out = capsys.readouterr().out
    assert code == 2
    assert "usage: qwen-sae" in out
    commands = out.split("positional arguments:")[1].splitlines()[2:]
    listed = [line.split()[0] for line in commands if line.startswith("    ") and not line.startswith("      ")]
    assert listed == list(COMMANDS)


def test_user_error_is_one_line_without_traceback(monkeypatch, capsys):
    import types

    fake = types.SimpleNamespace(
        HELP="raises", add_arguments=lambda p: None,
        run=lambda args: (_ for _ in ()).throw(UserError("bad thing; valid: a, b")))
    monkeypatch.setattr(cli, "_available", lambda: {"boom": "boom"})
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: fake)
    code = cli.main(["boom"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "qwen-sae boom: error: bad thing; valid: a, b"


def test_console_script_runs():
    """The `qwen-sae` script pip installs beside the interpreter (pyproject's [project.scripts])."""
    script = Path(sys.executable).with_name("qwen-sae")
    assert script.is_file(), f"{script} is missing: install the package (pip install -e .)"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: qwen-sae") and all(f"    {c} " in proc.stdout for c in ("train", "eval"))
    proc = subprocess.run([str(script), "nosuchcommand"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice: 'nosuchcommand'" in proc.stderr


def test_top_level_api_is_lazy():
    """`import qwen_sae_jax` imports neither JAX nor torch; each public name resolves on first use, and even then
    no JAX backend is initialised until something runs."""
    code = ("import sys, qwen_sae_jax as q\n"
            "assert not {'jax', 'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)\n"
            "names = [n for n in q.__all__ if n != '__version__']\n"
            "assert [getattr(q, n).__name__ for n in names] == names\n"
            "from jax._src import xla_bridge\n"
            "assert not xla_bridge._backends, xla_bridge._backends\n"
            "try:\n    q.nothing\nexcept AttributeError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "module 'qwen_sae_jax' has no attribute 'nothing'"


@pytest.mark.parametrize("argv, option", [
    (["steer", "--sae", "x", "--feature", "1", "--alpha", "nan", "--prompt", "hi"], "--alpha"),
    (["steer", "--sae", "x", "--feature", "1", "--alpha", "1", "--temperature", "inf", "--prompt", "hi"],
     "--temperature"),
    (["eval", "x", "--outlier-factor=-inf"], "--outlier-factor"),
    (["classify", "a.txt", "b.txt", "--sae", "x", "--test-fraction", "NaN"], "--test-fraction"),
    (["import", "x", "y", "--norm-scaling-factor", "inf"], "--norm-scaling-factor"),
])
def test_non_finite_float_options_are_refused_before_any_work(argv, option, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {option}: expected a finite number, got" in err
