"""The real `qwen-sae train` entry point in subprocesses: SIGKILL + --resume is bitwise exact, and two
cooperating processes (jax.distributed over 127.0.0.1, the 'model' axis across them), stopped by SIGTERM and
resumed, train the same SAEs as one process."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from qwen_sae_jax.config import to_dict
from tests.conftest import with_device_count

pytestmark = pytest.mark.slow


def _env(devices: int, cache_dir: str) -> dict:
    env = dict(os.environ)
    env.update(XLA_FLAGS=with_device_count(env.get("XLA_FLAGS", ""), devices), JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", TOKENIZERS_PARALLELISM="false")
    return env


def _cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "qwen_sae_jax.cli", "train", str(config), *args]


def _write(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    return path


def _tensors(run_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    out = {}
    for folder in sorted((run_dir / "saes").iterdir()):
        for key, value in load_file(str(folder / "sae.safetensors")).items():
            out[f"{folder.name}/{key}"] = value
    return out


def test_sigkill_then_resume_is_bitwise_exact(make_config, tmp_path, _compilation_cache):
    env = _env(1, _compilation_cache)
    common = ("train.total_tokens=38400", "log.every=5", "checkpoint.every=40", "mesh.data=1")
    ref = subprocess.run(_cli(_write(make_config(*common, run="ref"), tmp_path / "ref.yaml")), env=env,
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]

    # the killed run saves asynchronously (the default; the in-process SIGTERM test covers synchronous saves):
    # the kill may land while a checkpoint is still being written in the background
    config = _write(make_config(*common, "checkpoint.async_save=true", run="killed"), tmp_path / "killed.yaml")
    metrics = tmp_path / "killed" / "metrics.jsonl"
    proc = subprocess.Popen(_cli(config), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and any(json.loads(line)["step"] >= 125 for line in metrics.read_text().splitlines()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "summary.json").exists()
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert 125 <= steps[-1] < 300    # killed between checkpoints (every 40 steps)

    resumed = subprocess.run(_cli(config, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed" in resumed.stderr
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(5, 301, 5))          # records after the checkpoint were redone, not duplicated
    want, got = _tensors(tmp_path / "ref"), _tensors(tmp_path / "killed")
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(config: Path, devices: int, cache_dir: str, *extra: str) -> list[subprocess.Popen]:
    """Two cooperating `qwen-sae train` processes (jax.distributed over 127.0.0.1), ``devices`` CPU devices each."""
    port = _free_port()
    return [subprocess.Popen(_cli(config, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                  "--process-id", str(i), *extra),
                             env=_env(devices, cache_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(2)]


def _assert_same_run(a: Path, b: Path) -> None:
    """Equal SAE tensors (to float reassociation between the meshes) and held-out FVU."""
    want, got = _tensors(a), _tensors(b)
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)
    rows_a = json.loads((a / "summary.json").read_text())["saes"]
    rows_b = json.loads((b / "summary.json").read_text())["saes"]
    assert rows_a.keys() == rows_b.keys()
    for name in rows_a:
        assert rows_b[name]["fvu"] == pytest.approx(rows_a[name]["fvu"], rel=1e-4)


def test_two_processes_stop_together_and_resume(make_config, tmp_path, _compilation_cache):
    """Two processes of two devices each, mesh data=2 x model=2 (the 'data' axis across the processes, so each
    reads its own half of every batch): SIGTERM to process 0 stops both at the same step with one checkpoint
    holding each process's token-iterator state; both resumed, they end where one uninterrupted 4-device
    process does, and only process 0 prints the table."""
    from qwen_sae_jax.train.loop import train

    common = ("train.total_tokens=7680", "checkpoint.every=0", "log.every=5", "mesh.model=2")
    train(make_config(*common, "mesh.data=2", run="single"))     # one process, 4 of the 8 devices

    config = _write(make_config(*common, run="multi"), tmp_path / "multi.yaml")
    metrics = tmp_path / "multi" / "metrics.jsonl"
    procs = _start(config, 2, _compilation_cache)
    deadline = time.time() + 240
    while time.time() < deadline and procs[0].poll() is None:
        if metrics.exists() and any(json.loads(line)["step"] >= 15 for line in metrics.read_text().splitlines()):
            break
        time.sleep(0.05)
    procs[0].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [143, 143], [err[-3000:] for _, err in outs]
    assert "2 process(es)" in outs[0][1] and "mesh data=2 model=2" in outs[0][1]
    (step,) = [int(p.name) for p in (tmp_path / "multi" / "checkpoints").iterdir()]
    assert 15 <= step < 60
    stream = tmp_path / "multi" / "checkpoints" / str(step) / "stream"
    states = [json.loads((stream / f"process_{i}-of-2.json").read_text()) for i in range(2)]
    assert states[0] != states[1]                                     # each process its own rows

    procs = _start(config, 2, _compilation_cache, "--resume")
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert f"from step {step}" in outs[0][1]
    assert "FVU" in outs[0][0] and "FVU" not in outs[1][0]           # only process 0 prints the table
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == list(range(5, 61, 5))
    _assert_same_run(tmp_path / "single", tmp_path / "multi")


def test_model_axis_across_two_processes(make_config, tmp_path, _compilation_cache):
    """One device per process, mesh data=1 x model=2: each SAE's latents split over the two processes, which
    both hold (and load) every row of the batch; the same SAEs as one process with data=1 x model=2."""
    from qwen_sae_jax.train.loop import train

    common = ("train.total_tokens=3072", "checkpoint.every=12", "log.every=4", "mesh.model=2")
    train(make_config(*common, "mesh.data=1", run="single"))
    procs = _start(_write(make_config(*common, run="multi"), tmp_path / "multi.yaml"), 1, _compilation_cache)
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "mesh data=1 model=2, 2 process(es)" in outs[0][1]
    _assert_same_run(tmp_path / "single", tmp_path / "multi")
