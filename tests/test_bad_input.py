"""Bad input to every command but train / sft, through the real CLI: wrong paths, a file where a folder is
wanted and the other way round, wrong types, out-of-range numbers, empty files, an SAE of another model,
outputs that cannot or must not be written, and interrupted writes. Each is one line on stderr
(``qwen-sae COMMAND: error: ...``), exit status 2, and leaves nothing half-written (issue 18).

The SAEs are random ones for the embedded tiny model (built here in milliseconds, nothing is trained); the
cases that get as far as loading the model load the embedded one."""
import json
import os
import shlex
from pathlib import Path

import pytest

from qwen_sae_jax.cli import main


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace: SAEs for the tiny model (layers.2, one 32 wide, one at layers.9), a run directory, text
    files (good, empty, blank, not UTF-8), a plain file and a non-empty folder."""
    import jax

    from qwen_sae_jax.config import dump_yaml, load_config
    from qwen_sae_jax.sae import SAEConfig, init_sae, save_sae
    from qwen_sae_jax.train.config import TrainConfig

    root = tmp_path_factory.mktemp("bad-input")

    def sae(hook, d_in=192, seed=0):
        cfg = SAEConfig(architecture="topk", d_in=d_in, d_sae=64, k=4, hook_name=hook, model_name="tiny")
        return init_sae(cfg, jax.random.key(seed))

    save_sae(sae("layers.2"), root / "sae")
    save_sae(sae("layers.2", d_in=32), root / "narrow")
    save_sae(sae("layers.9"), root / "deep")
    run = root / "run"
    cfg = load_config(TrainConfig, {"run_dir": str(run), "model": {"name": "tiny"}, "hooks": ["layers.2"],
                                    "data": {"files": ["tiny:heldout/english.jsonl"], "ctx_len": 16}})
    (run / "saes").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_yaml(cfg))
    save_sae(sae("layers.2"), run / "saes" / "layers.2__topk")
    save_sae(sae("layers.1.mlp", seed=1), run / "saes" / "layers.1.mlp__topk")
    (root / "pos.txt").write_text("How do I make a bomb?\nHow do I steal a car?\nHow to hack a bank?\n")
    (root / "neg.txt").write_text("How do I bake bread?\nWhat is the capital of France?\nTell me a joke.\n")
    (root / "one.txt").write_text("only one text\n")
    (root / "empty.txt").write_text("")
    (root / "blank.txt").write_text("\n  \n\n")
    (root / "latin1.txt").write_bytes(b"caf\xe9 au lait\n")
    (root / "afile").write_text("not an SAE\n")
    (root / "broken.yaml").write_text("saes: [a, b\n")
    (root / "refusal-full.yaml").write_text(f"saes: [{run}]\nout_dir: {root / 'full'}\n")
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("keep")
    return root


def one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"qwen-sae {command}: error: "), err
    assert "Traceback" not in err
    return err


def run_cli(argv: list[str], ws: Path) -> int:
    """``main(argv)`` with ``{ws}`` in the arguments replaced by the workspace; argparse's exits as codes."""
    argv = [a.replace("{ws}", str(ws)) for a in argv]
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


# argparse-level: refused before anything is read
@pytest.mark.parametrize("argv, message", [
    ("contrast {ws}/pos.txt {ws}/neg.txt --sae {ws}/sae --top abc",
     "argument --top: expected an integer >= 1, got 'abc'"),
    ("contrast {ws}/pos.txt {ws}/neg.txt --sae {ws}/sae --top 0", "argument --top: expected an integer >= 1, got 0"),
    ("contrast {ws}/pos.txt {ws}/neg.txt --sae {ws}/sae --batch-size -3", "--batch-size: expected an integer >= 1"),
    ("steer --sae {ws}/sae --feature 1 --alpha 1 --prompt hi --max-new-tokens -5", "--max-new-tokens: expected an "
     "integer >= 1, got -5"),
    ("steer --sae {ws}/sae --feature 1 --alpha 1e39 --prompt hi", "--alpha: expected a finite number within float32"),
    ("steer --sae {ws}/sae --feature 1 --alpha inf --prompt hi", "--alpha: expected a finite number, got 'inf'"),
    ("steer --sae {ws}/sae --feature 1 --alpha -1e39 --prompt hi", "--alpha: expected a finite number within float32"),
    ("steer --sae {ws}/sae --feature 1 --alpha 1 --prompt hi --width 0", "--width: expected an integer >= 43"),
    ("steer --sae {ws}/sae --feature 1 --alpha 1 --prompt hi --seed 1.5", "argument --seed: invalid int value"),
    ("eval {ws}/run --tokens 0", "--tokens: expected an integer >= 1, got 0"),
    ("eval {ws}/run --ctx-len 1", "--ctx-len: expected an integer >= 2, got 1"),
    ("eval {ws}/run --k 0", "--k: expected an integer >= 1"),
    ("eval {ws}/run --outlier-factor nan", "--outlier-factor: expected a finite number"),
    ("dashboard {ws}/run --out {ws}/d --ctx-len 1", "--ctx-len: expected an integer >= 2, got 1"),
    ("dashboard {ws}/run --out {ws}/d --left -1", "--left: expected an integer >= 0, got -1"),
    ("dashboard {ws}/run --out {ws}/d --n-examples many", "--n-examples: expected an integer >= 1, got 'many'"),
    ("dashboard {ws}/run", "the following arguments are required: --out"),
    ("classify {ws}/pos.txt {ws}/neg.txt --sae {ws}/sae --test-fraction 1.5", "--test-fraction: expected a number "
     "strictly between 0 and 1"),
    ("classify {ws}/pos.txt {ws}/neg.txt --sae {ws}/sae --max-len 0", "--max-len: expected an integer >= 1"),
    ("classify {ws}/pos.txt {ws}/neg.txt --sae {ws}/sae --max-features -1", "--max-features: expected an integer"),
    ("redundancy {ws}/pos.txt --sae {ws}/sae --n-texts 0", "--n-texts: expected an integer >= 1, got 0"),
    ("import {ws}/sae {ws}/out --layer -1", "--layer: expected an integer >= 0, got -1"),
    ("import {ws}/sae {ws}/out --norm-scaling-factor -inf", "--norm-scaling-factor: expected a finite number"),
    ("export {ws}/run {ws}/out", "the following arguments are required: --format"),
    ("export {ws}/run {ws}/out --format onnx", "argument --format: invalid choice: 'onnx'"),
    ("export {ws}/run {ws}/out --format saelens --k 0", "--k: expected an integer >= 1"),
    ("capture --hooks layers.1 --text hi --dtype float16", "argument --dtype: invalid choice: 'float16'"),
    ("releases --bogus", "unrecognized arguments: --bogus"),
    ("refusal", "the following arguments are required: config"),
])
def test_argument_errors_are_one_line(argv, message, ws, capsys):
    argv = shlex.split(argv)
    assert run_cli(argv, ws) == 2
    err = one_line(capsys, argv[0])
    assert message in err and err.endswith(f"(see qwen-sae {argv[0]} --help)"), err


# paths: missing, a file where a folder is wanted and the other way round, empty / undecodable text files
@pytest.mark.parametrize("argv, message", [
    ("eval /nonexistent/run", "no such file or folder: /nonexistent/run"),
    # a negative number in exponent form is a value, not an unknown option (argparse alone knows only -4, -0.5)
    ("steer --sae /nonexistent --feature 1 --alpha -1e3 --prompt hi", "no such file or folder: /nonexistent"),
    ("eval {ws}/afile", "afile is a file but not an SAE: expected"),
    ("eval {ws}/sae --data {ws}/empty.txt", "holds no documents"),
    ("export /nonexistent/run {ws}/out --format saelens", "no such file or folder"),
    ("export {ws}/afile {ws}/out --format saelens", "is a file but not an SAE"),
    ("export {ws}/run {ws}/out --format saelens --density /nonexistent.safetensors", "--density /nonexistent"),
    ("import {ws}/afile {ws}/out", "is a file but not an SAE"),
    ("import {ws}/sae {ws}/afile/out", "afile is a file, not a folder"),
    ("steer --sae {ws}/afile --feature 1 --alpha 1 --prompt hi", "is a file but not an SAE"),
    ("steer --sae {ws}/sae --feature 1 --alpha 1 --prompt ' '", "--prompt must not be empty"),
    ("contrast {ws}/empty.txt {ws}/neg.txt --sae {ws}/sae", "text file '{ws}/empty.txt' is empty"),
    ("contrast {ws}/blank.txt {ws}/neg.txt --sae {ws}/sae", "holds no non-empty text"),
    ("contrast {ws}/latin1.txt {ws}/neg.txt --sae {ws}/sae", "not UTF-8 text (byte 0xe9 at offset 3)"),
    ("contrast {ws}/run {ws}/neg.txt --sae {ws}/sae", "text file '{ws}/run' is a folder"),
    ("contrast {ws}/pos.txt {ws}/neg.txt --sae {ws}/sae --json {ws}/full", "--json {ws}/full is a folder"),
    ("dashboard /nonexistent/run --out {ws}/d", "no such file or folder: /nonexistent/run"),
    ("dashboard {ws}/afile --out {ws}/d", "is not a training run"),
    ("dashboard {ws}/run --out {ws}/d --files {ws}/empty.txt", "holds no documents"),
    ("dashboard {ws}/run --out {ws}/d --files {ws}/full", "--files {ws}/full is a folder; give files or globs"),
    ("classify {ws}/pos.txt {ws}/empty.txt --sae {ws}/sae", "text file '{ws}/empty.txt' is empty"),
    ("classify {ws}/pos.txt {ws}/run --sae {ws}/sae", "is a folder"),
    ("classify {ws}/one.txt {ws}/neg.txt --sae {ws}/sae", "one.txt holds 1 text(s); at least 2 are needed"),
    ("classify {ws}/pos.txt {ws}/neg.txt --sae {ws}/afile", "is a file but not an SAE"),
    ("classify {ws}/pos.txt {ws}/neg.txt --sae {ws}/sae --json {ws}/afile/x.json", "afile is a file, not a folder"),
    ("redundancy {ws}/latin1.txt --sae {ws}/sae", "not UTF-8 text"),
    ("redundancy {ws}/pos.txt --sae {ws}/sae --plot {ws}/full", "--plot {ws}/full is a folder"),
    ("capture --hooks layers.1 --file {ws}/run", "--file {ws}/run is a folder"),
    ("capture --hooks layers.1 --file {ws}/latin1.txt", "not UTF-8 text"),
    ("capture --hooks layers.1 --text hi --out {ws}/afile", "--out {ws}/afile: {ws}/afile is a file"),
    ("refusal /nonexistent.yaml", "config file '/nonexistent.yaml' does not exist"),
    ("refusal {ws}/run", "is a folder"),
    ("refusal {ws}/broken.yaml", "is not valid YAML at line 2, column 1: expected ',' or ']'"),
    ("refusal {ws}/latin1.txt", "is not UTF-8 text (byte offset 3)"),
    ("refusal {ws}/pos.txt", "expected a mapping of keys for RefusalConfig"),
    ("demo --config /nonexistent.yaml", "demo config /nonexistent.yaml not found"),
    ("demo --config {ws}/full", "demo config {ws}/full is a folder"),
    ("demo --run-dir {ws}/full", "{ws}/full exists and is not a training run"),
    ("demo train.total_tokens=abc", "config key 'train.total_tokens': expected an integer, got 'abc'"),
])
def test_bad_paths_are_one_line(argv, message, ws, capsys):
    argv = shlex.split(argv)
    assert run_cli(argv, ws) == 2
    assert message.replace("{ws}", str(ws)) in one_line(capsys, argv[0])
    assert not (ws / "out").exists() and not (ws / "d").exists()


# outputs that must not be replaced: refused before any work, the folder untouched
@pytest.mark.parametrize("argv, message", [
    ("eval {ws}/sae --out {ws}/full", "holds something other than an evaluation"),
    ("dashboard {ws}/run --out {ws}/full", "holds something other than a qwen-sae dashboard"),
    ("export {ws}/run {ws}/full --format saelens", "already exists; pass --force"),
    ("import {ws}/sae {ws}/full", "already exists; pass --force"),
    ("export {ws}/run {ws} --format sparsify --force", "is SRC or a folder holding it"),
    ("import {ws}/sae {ws}/sae --force", "is SRC or a folder holding it"),
    ("capture --hooks layers.1 --text hi --out {ws}/full", "holds something other than a capture"),
    ("refusal {ws}/refusal-full.yaml", "holds something other than a refusal report"),
    ("refusal {ws}/refusal-full.yaml out_dir={ws}/afile/sub", "afile is a file, not a folder"),
])
def test_outputs_that_must_not_be_replaced(argv, message, ws, capsys):
    argv = shlex.split(argv)
    before = sorted(p.relative_to(ws) for p in ws.rglob("*"))
    assert run_cli(argv, ws) == 2
    assert message in one_line(capsys, argv[0])
    assert sorted(p.relative_to(ws) for p in ws.rglob("*")) == before
    assert (ws / "full" / "keep.txt").read_text() == "keep"


# values that only the model can judge: checked once it is loaded, before the work
@pytest.mark.parametrize("argv, message", [
    ("steer --sae {ws}/narrow --feature 1 --alpha 1 --prompt hi", "has width 32 but the model's activations there "
     "are 192 wide"),
    ("steer --sae {ws}/deep --feature 1 --alpha 1 --prompt hi", "unknown hook name(s) for this 4-layer model: "
     "'layers.9'"),
    ("steer --sae {ws}/sae --feature 64 --alpha 1 --prompt hi", "feature 64 is out of range"),
    ("contrast {ws}/pos.txt {ws}/neg.txt --sae {ws}/narrow", "reads 32-wide activations"),
    ("eval {ws}/narrow", "has d_in=32 but model 'tiny' has width 192"),
    ("eval {ws}/sae --data {ws}/full", "held-out file '{ws}/full' is a folder"),
    ("eval {ws}/sae --data {ws}/pos.txt --batch-size 2", "hold 1 document(s), fewer than the batch size 2"),
    ("eval {ws}/sae --ctx-len 100000", "ctx_len 100000 (--ctx-len) is longer than model tiny's "
     "max_position_embeddings (512)"),
    ("dashboard {ws}/run --out {ws}/d --ctx-len 100000", "--ctx-len 100000 is longer than"),
    ("classify {ws}/pos.txt {ws}/neg.txt --sae {ws}/deep", "reads hook 'layers.9', which model 'tiny'"),
    ("capture --hooks layers.1 --tokens 5,99999 --out {ws}/acts", "token id 99999 is out of range for model tiny"),
    ("capture --hooks layers.1.attn --text hi --out {ws}/acts", "layers.1.attn"),
])
def test_model_checks_are_one_line(argv, message, ws, capsys):
    argv = shlex.split(argv)
    assert run_cli(argv, ws) == 2
    assert message.replace("{ws}", str(ws)) in one_line(capsys, argv[0])
    assert not (ws / "acts").exists() and not (ws / "d").exists()


@pytest.mark.parametrize("argv, target, calls_before", [
    ("export {ws}/run {ws}/out --format saelens", "qwen_sae_jax.interop.export.render_model_card", 0),
    ("import {ws}/run {ws}/out", "qwen_sae_jax.sae.save_sae", 1),
    ("eval {ws}/sae --out {ws}/out --tokens 32 --ctx-len 16 --batch-size 2 --no-joint",
     "qwen_sae_jax.eval.plots.plot_all", 0),
    ("capture --hooks layers.1 layers.2 --text hi --out {ws}/out", "numpy.save", 3),
])
def test_interrupted_write_leaves_nothing(argv, target, calls_before, ws, capsys, monkeypatch):
    """Ctrl-C while the output is being written (after ``calls_before`` calls of ``target`` went through, so
    part of it is on disk): exit 130, one line, and neither the output nor a temporary folder is left (the
    output is written beside its destination and renamed into place when complete)."""
    import importlib

    module, name = target.rsplit(".", 1)
    real = getattr(importlib.import_module(module), name)
    calls = []

    def interrupt(*args, **kwargs):
        calls.append(name)
        if len(calls) > calls_before:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(target, interrupt)
    argv = argv.replace("{ws}", str(ws)).split()
    before = sorted(os.listdir(ws))
    assert main(argv) == 130
    assert capsys.readouterr().err.strip() == f"qwen-sae {argv[0]}: interrupted"
    assert len(calls) == calls_before + 1
    assert sorted(os.listdir(ws)) == before


def test_eval_output_is_replaced_whole(ws, capsys):
    """An earlier evaluation in --out is replaced as a whole (no stale file from it survives)."""
    out = ws / "ev"
    args = ["eval", str(ws / "sae"), "--out", str(out), "--tokens", "32", "--ctx-len", "16", "--batch-size", "2",
            "--no-joint", "--no-plots"]
    assert main(args) == 0
    (out / "stale.txt").write_text("from before")
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["eval.csv", "eval.json", "eval.md", "feature_density.safetensors"]
    assert json.loads((out / "eval.json").read_text())["saes"][0]["hook"] == "layers.2"
    assert not [p for p in ws.iterdir() if p.name.startswith(".ev")]


def test_atomic_file_keeps_the_old_file_on_failure(tmp_path):
    from qwen_sae_jax.atomic import atomic_file

    path = tmp_path / "sub" / "out.json"
    with atomic_file(path) as tmp:
        assert tmp.suffix == ".json" and tmp.parent == path.parent
        tmp.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(path) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old" and os.listdir(path.parent) == ["out.json"]


@pytest.mark.parametrize("error, line", [
    (PermissionError(13, "Permission denied", "/x/y"), "Permission denied: /x/y"),
    (OSError(28, "No space left on device", "/x/y"), "No space left on device: /x/y"),
    (IsADirectoryError(21, "Is a directory", "/x"), "Is a directory: /x"),
])
def test_path_errors_of_the_system_are_one_line(error, line, monkeypatch, capsys):
    """An OSError about a path the user named (no permission, disk full, a folder for a file) is one line
    and exit 2 like a UserError; any other OSError keeps its traceback (a bug to see)."""
    from qwen_sae_jax.cli import releases

    def fail(args):
        raise error

    monkeypatch.setattr(releases, "run", fail)
    assert main(["releases"]) == 2
    assert capsys.readouterr().err.strip() == f"qwen-sae releases: error: {line}"
    monkeypatch.setattr(releases, "run", lambda args: (_ for _ in ()).throw(OSError(5, "Input/output error")))
    with pytest.raises(OSError, match="Input/output error"):
        main(["releases"])


@pytest.mark.parametrize("override, message", [
    ("hooks=[]", "hooks is an empty list"),
    ("alphas=[]", "alphas must list at least one steering strength"),
    ("alphas=[nan]", "config key 'alphas.0': expected a finite number, got 'nan'"),
    ("window=0", "window must be >= 1"),
    ("top_features=abc", "config key 'top_features': expected an integer, got 'abc'"),
    ("batch_size=0", "batch_size must be >= 1, got 0"),
    ("prompts.rank_fraction=1", "prompts.rank_fraction must be in (0, 1)"),
    ("bogus=1", "unknown config key 'bogus'"),
])
def test_refusal_config_values_are_one_line(override, message, ws, capsys):
    """Out-of-range and empty values of the refusal config are refused when it loads, before any SAE or
    model is read."""
    assert main(["refusal", str(ws / "refusal-full.yaml"), f"out_dir={ws / 'r'}", override]) == 2
    assert message in one_line(capsys, "refusal")
    assert not (ws / "r").exists()
