"""The `qwen-sae` dispatcher and the one-line user errors."""
import subprocess
import sys

import pytest

from qwen_sae_jax import cli
from qwen_sae_jax.errors import UserError, closest, did_you_mean


def test_closest_and_did_you_mean():
    valid = ["d_sae", "d_in", "learning_rate"]
    assert closest("learnig_rate", valid) == "learning_rate"
    assert "learning_rate" in did_you_mean("learnig_rate", valid)
    assert closest("zzzzzz", valid) is None
    assert did_you_mean("zzzzzz", valid) == ""


def test_help_lists_subcommands(capsys):
    code = cli.main([])
    out = capsys.readouterr().out
    assert code == 2
    assert "usage: qwen-sae" in out


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
    proc = subprocess.run([sys.executable, "-m", "qwen_sae_jax.cli", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "qwen-sae" in proc.stdout
