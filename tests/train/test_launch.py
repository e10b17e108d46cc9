"""launch/ scripts (they cannot run here): argument handling and the commands they generate (--dry-run),
and that the generated `qwen-sae train` command line parses with the real CLI."""
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from qwen_sae_jax.cli import build_parser

LAUNCH = Path(__file__).resolve().parents[2] / "launch"


def _run(script, *args, **env):
    full = {**os.environ, **env}
    return subprocess.run(["bash", str(LAUNCH / script), *args], env=full, capture_output=True, text=True, timeout=60)


def _parse_train(argv):
    args = build_parser(only="train").parse_args(argv)
    assert args.command == "train"
    return args


def test_tpu_pod_create_picks_the_runtime_for_the_accelerator():
    for accelerator, version in (("v4-32", "tpu-ubuntu2204-base"), ("v5litepod-32", "v2-alpha-tpuv5-lite"),
                                 ("v5p-64", "v2-alpha-tpuv5")):
        out = _run("tpu_pod.sh", "--dry-run", "create", TPU_NAME="sae", ZONE="us-central2-b", ACCELERATOR=accelerator,
                   SPOT="1")
        assert out.returncode == 0, out.stderr
        assert shlex.split(out.stdout) == ["gcloud", "compute", "tpus", "tpu-vm", "create", "sae",
                                           "--zone=us-central2-b", f"--accelerator-type={accelerator}",
                                           f"--version={version}", "--spot"]


def test_tpu_pod_train_runs_the_same_cli_command_on_every_worker():
    out = _run("tpu_pod.sh", "--dry-run", "train", "configs/qwen-scope-1.7b.yaml", "run_dir=/mnt/gcs/my run",
               "saes.0.k=64", "--resume", TPU_NAME="sae", ZONE="europe-west4-b", PROJECT="p")
    assert out.returncode == 0, out.stderr
    argv = shlex.split(out.stdout)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "sae"]
    assert "--worker=all" in argv and "--project=p" in argv
    remote = shlex.split(next(a for a in argv if a.startswith("--command=")).removeprefix("--command="))
    train = remote[remote.index("train") + 1:remote.index("2>&1")]
    args = _parse_train(["train", *train])
    assert args.config == "configs/qwen-scope-1.7b.yaml" and args.resume
    assert args.overrides == ["distributed.initialize=yes", "run_dir=/mnt/gcs/my run", "saes.0.k=64"]


@pytest.mark.parametrize("args, env, message", [
    (["train", "x.yaml"], {"ZONE": "z"}, "set TPU_NAME"),
    (["create"], {"TPU_NAME": "t", "ZONE": "z"}, "set ACCELERATOR"),
    (["create"], {"TPU_NAME": "t", "ZONE": "z", "ACCELERATOR": "v9-8"}, "no default VERSION"),
    (["explode"], {"TPU_NAME": "t", "ZONE": "z"}, "unknown action 'explode'"),
])
def test_tpu_pod_bad_arguments(args, env, message):
    out = _run("tpu_pod.sh", "--dry-run", *args, **{"TPU_NAME": "", **env})
    assert out.returncode == 2 and message in out.stderr


def test_gpu_single_host_command():
    out = _run("gpu_single_host.sh", "--dry-run", "--install", "configs/qwen-scope-8b.yaml", "mesh.model=8",
               "--resume", GPUS="0,1,2,3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert shlex.split(lines[1])[-1] == "jax[cuda12]" and "CUDA_VISIBLE_DEVICES=0,1,2,3" in lines[2]
    argv = shlex.split(lines[-1])
    assert argv[:4] == ["python3", "-m", "qwen_sae_jax.cli", "train"]
    args = _parse_train(argv[3:])
    assert args.config == "configs/qwen-scope-8b.yaml" and args.resume
    assert args.overrides == ["distributed.initialize=no", "mesh.model=8"]
    assert _run("gpu_single_host.sh").returncode == 2
