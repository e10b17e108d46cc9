"""`qwen-sae train`: --help documents every config key; bad input is one line and exit code 2; SIGINT / SIGTERM
save and exit with 130 / 143."""
import signal

import pytest
import yaml

from qwen_sae_jax.cli import main
from qwen_sae_jax.config import describe_fields, to_dict
from qwen_sae_jax.train.config import TrainConfig
from tests.train.helpers import signal_at


def test_help_documents_every_field(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    keys = [d.key for d in describe_fields(TrainConfig)]
    assert len(keys) > 60
    missing = [k for k in keys if f"  {k}:" not in out]
    assert not missing
    for d in describe_fields(TrainConfig):
        assert d.help, f"{d.key} has no help text"
    assert "saes.N.dead_tokens_threshold: int = 10000000" in out and "--resume" in out


@pytest.mark.parametrize("args, message", [
    (["configs/tiny.yaml", "saes.0.kk=3"], "unknown config key 'saes.0.kk' (did you mean 'saes.0.k'?)"),
    (["configs/tiny.yaml", "--resume", "saes.0.kk=3"], "unknown config key 'saes.0.kk'"),  # overrides after options
    (["configs/tiny.yaml", "hooks=[layers.7.mlp]"], "unknown hook name(s) for this 4-layer model: 'layers.7.mlp'"),
    (["configs/tiny.yaml", "saes.0.expansion_factor=null", "saes.0.d_sae=1004", "mesh.model=8"],
     "d_sae=1004 is not divisible by the 'model' mesh axis (8 devices)"),
    (["configs/tiny.yaml", "data.files=[/nonexistent/*.jsonl]"], "matches no file"),
    (["configs/tiny.yaml", "data.text_column=body"], "no text column 'body'"),
    (["missing.yaml"], "config file 'missing.yaml' does not exist"),
])
def test_bad_input_is_one_line(args, message, capsys, tmp_path):
    code = main(["train", *args, f"run_dir={tmp_path / 'run'}"] if args[0] != "missing.yaml" else ["train", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("qwen-sae train: error: ")
    assert message in err


def test_unknown_option_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "configs/tiny.yaml", "--resume", "--bogus"])
    assert exit_.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_exits_128_plus_signal(make_config, tmp_path, capsys, signum, code):
    """docs/training.md: SIGINT / SIGTERM save a checkpoint at the next step boundary and exit with 130 / 143;
    `--resume` then finishes the run (exit 0, the table printed)."""
    cfg = make_config("train.total_tokens=1536", "checkpoint.every=0", "log.every=1")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    before = signal.getsignal(signum)
    with signal_at(5, signum):
        assert main(["train", str(path)]) == code
    err = capsys.readouterr().err
    assert "stopped by signal at step 5; checkpoint saved. Continue with --resume" in err
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["5"]
    assert signal.getsignal(signum) is before                 # the training loop's handler is removed again
    assert main(["train", str(path), "--resume"]) == 0
    assert "FVU" in capsys.readouterr().out and (tmp_path / "run" / "summary.json").is_file()


def test_second_ctrl_c_stops_at_once(capsys, monkeypatch):
    """A second SIGINT while the first one's checkpoint is pending raises KeyboardInterrupt; the CLI prints one
    line and exits with 130."""
    from qwen_sae_jax.train import loop, run_control

    stop = run_control.StopRequest()
    stop._handle(signal.SIGINT, None)
    assert stop.signal == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)
    stop = run_control.StopRequest()
    stop._handle(signal.SIGTERM, None)
    stop._handle(signal.SIGTERM, None)          # a repeated SIGTERM only asks again
    assert stop.signal == signal.SIGTERM

    def interrupted(cfg, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", interrupted)
    assert main(["train", "configs/tiny.yaml"]) == 130
    assert capsys.readouterr().err.strip() == "qwen-sae train: interrupted"
