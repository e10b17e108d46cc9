"""`qwen-sae train`: --help documents every config key; bad input is one line and exit code 2."""
import pytest

from qwen_sae_jax.cli import main
from qwen_sae_jax.config import describe_fields
from qwen_sae_jax.train.config import TrainConfig


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
