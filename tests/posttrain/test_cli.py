"""`qwen-sae sft` end to end: --help lists every config key; a run SIGKILLed between checkpoints and resumed
through the CLI ends with bitwise-identical parameters; the HF export loads in transformers (same logits) and
in load_model; SASFT logs its term; bad input is one line."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from qwen_sae_jax.cli import main
from qwen_sae_jax.config import describe_fields
from qwen_sae_jax.posttrain.config import SFTConfig
from tests.conftest import with_device_count


def write_config(tmp_path: Path, tiny_model, chat_file, run: str, **extra) -> Path:
    cfg = {"run_dir": str(tmp_path / run), "model": {"name": tiny_model},
           "data": {"files": [chat_file], "max_len": 48},
           "train": {"steps": 12, "batch_size": 4}, "optim": {"lr": 1e-3, "warmup_steps": 2},
           "log": {"every": 1, "progress": "lines"}, "checkpoint": {"every": 4, "async_save": True},
           "mesh": {"data": 1}, **extra}
    path = tmp_path / f"{run}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_help_lists_every_key(capsys):
    with pytest.raises(SystemExit):
        main(["sft", "--help"])
    out = capsys.readouterr().out
    for field in describe_fields(SFTConfig):
        assert f"  {field.key}:" in out and field.help, field.key


def _params(hf_dir: Path) -> dict:
    from safetensors.numpy import load_file
    return load_file(str(hf_dir / "model.safetensors"))


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_exact(tiny_model, chat_file, tmp_path):
    env = dict(os.environ, XLA_FLAGS=with_device_count(os.environ.get("XLA_FLAGS", ""), 1), JAX_PLATFORMS="cpu")
    cli = lambda cfg, *a: [sys.executable, "-m", "qwen_sae_jax.cli", "sft", str(cfg), *a]  # noqa: E731
    ref = subprocess.Popen(cli(write_config(tmp_path, tiny_model, chat_file, "ref")), env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)   # runs alongside
    config = write_config(tmp_path, tiny_model, chat_file, "killed")
    metrics = tmp_path / "killed" / "metrics.jsonl"
    proc = subprocess.Popen(cli(config), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (tmp_path / "killed" / "checkpoints" / "4").is_dir() and \
                any(json.loads(line)["step"] >= 6 for line in metrics.read_text().splitlines()):
            break                                  # a finished checkpoint (step 4) and steps logged after it
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert 6 <= steps[-1] < 12 and not (tmp_path / "killed" / "hf").exists()
    resumed = subprocess.run(cli(config, "--resume"), env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert ref.wait(timeout=120) == 0, ref.stderr.read()[-2000:]
    assert "resumed" in resumed.stderr
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == list(range(1, 13))
    want, got = _params(tmp_path / "ref" / "hf"), _params(tmp_path / "killed" / "hf")
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # the reference run really trained: its export differs from the starting model
    start = _params(Path(tiny_model))
    assert any(not np.array_equal(start[k], want[k]) for k in want)


@pytest.mark.slow
def test_two_processes_train_what_one_does(tiny_model, chat_file, tmp_path):
    """Two cooperating processes of one CPU device each (jax.distributed over 127.0.0.1), mesh data=2: each
    loads its own half of every batch; the export (gathered to process 0) equals one process with 2 devices."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    train = {"steps": 4, "batch_size": 4}
    assert main(["sft", str(write_config(tmp_path, tiny_model, chat_file, "single", train=train,
                                         mesh={"data": 2}))]) == 0
    config = write_config(tmp_path, tiny_model, chat_file, "multi", train=train, mesh={"data": 2})
    env = dict(os.environ, XLA_FLAGS=with_device_count(os.environ.get("XLA_FLAGS", ""), 1), JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-m", "qwen_sae_jax.cli", "sft", str(config), "--coordinator",
                               f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]
    assert "mesh data=2 model=1, 2 process(es)" in outs[0][1]
    want, got = _params(tmp_path / "single" / "hf"), _params(tmp_path / "multi" / "hf")
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_export_loads_in_transformers_and_load_model(tiny_model, chat_file, tmp_path):
    import torch
    import transformers

    from qwen_sae_jax.lm import load_model
    cfg = write_config(tmp_path, tiny_model, chat_file, "run", train={"steps": 3, "batch_size": 4})
    assert main(["sft", str(cfg)]) == 0
    hf = tmp_path / "run" / "hf"
    lm = load_model(str(hf))
    assert lm.tokenizer is not None and lm.tokenizer.chat_template
    ids = np.asarray([[5, 80, 90, 100, 7]])
    ours = np.asarray(lm.logits(ids))
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(hf)).eval()
    with torch.no_grad():
        theirs = ref(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert not np.allclose(ours, np.asarray(load_model(tiny_model).logits(ids)))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and all(r["sasft"] == 0.0 for r in records)


def test_sasft_run_logs_its_term(tiny_model, chat_file, sae_dir, tau_files, tmp_path, capsys):
    from tests.posttrain.conftest import feature_rows
    features = tmp_path / "features.json"
    features.write_text(json.dumps(feature_rows(tau=False)))                # tau computed from tau_files
    cfg = write_config(tmp_path, tiny_model, chat_file, "sasft", train={"steps": 2, "batch_size": 4},
                       export={"hf": False}, log={"every": 1, "progress": "lines", "tensorboard": True},
                       sasft={"features": str(features), "saes": [sae_dir], "coefficient": 0.5,
                              "tau_files": tau_files})
    assert main(["sft", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "SASFT on layers.1" in err and "step 2/2 (100%)" in err and "| sasft " in err
    records = [json.loads(line) for line in (tmp_path / "sasft" / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        assert r["sasft"] > 0
        np.testing.assert_allclose(r["loss"], r["ce"] + 0.5 * r["sasft"], rtol=1e-5)
    # the same terms in TensorBoard, at their steps
    from tensorboardX.proto.event_pb2 import Event

    from tests.train.test_logs import _tfrecords
    (events,) = (tmp_path / "sasft" / "tensorboard").glob("events.out.tfevents.*")
    scalars = {(v.tag, e.step): v.simple_value for e in map(Event.FromString, _tfrecords(events))
               for v in e.summary.value}
    for r in records:
        assert scalars[("ce", r["step"])] == pytest.approx(r["ce"]) and \
            scalars[("sasft", r["step"])] == pytest.approx(r["sasft"])


def test_sasft_run_with_per_layer_remat_logs_the_same_terms(tiny_model, chat_file, sae_dir, tau_files, tmp_path):
    """`train.remat=layers` through the CLI: the SASFT term reads activations captured inside checkpointed
    layers, and every step's loss terms equal those of the run without remat."""
    from tests.posttrain.conftest import feature_rows
    features = tmp_path / "features.json"
    features.write_text(json.dumps(feature_rows(tau=False)))
    records = {}
    for remat in ("none", "layers"):
        cfg = write_config(tmp_path, tiny_model, chat_file, remat, train={"steps": 3, "batch_size": 4, "remat": remat},
                           export={"hf": False}, checkpoint={"every": 0},
                           sasft={"features": str(features), "saes": [sae_dir], "coefficient": 0.5,
                                  "tau_files": tau_files})
        assert main(["sft", str(cfg)]) == 0
        records[remat] = [json.loads(line) for line in (tmp_path / remat / "metrics.jsonl").read_text().splitlines()]
    assert len(records["layers"]) == len(records["none"]) == 3
    for a, b in zip(records["none"], records["layers"]):
        assert b["sasft"] > 0
        for key in ("loss", "ce", "sasft", "grad_norm"):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=key)


@pytest.mark.parametrize("override, match", [
    ("sasft.coefficient=-1", r"sasft.coefficient \(lambda\) must be >= 0"),
    ("sasft.features=f.json", "sasft.saes is empty"),
    ("train.steps=0", "train.steps and train.batch_size must be >= 1"),
    ("sasft.lambda=1", "unknown config key 'sasft.lambda'"),
])
def test_bad_config_is_one_line(tiny_model, chat_file, tmp_path, capsys, override, match):
    cfg = write_config(tmp_path, tiny_model, chat_file, "bad")
    assert main(["sft", str(cfg), override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("qwen-sae sft: error:")
    import re
    assert re.search(match, err), err
