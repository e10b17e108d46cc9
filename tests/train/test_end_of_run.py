"""The end of a run (train.loop._finish): it holds no more device arrays than a training step, a kill while the
SAE folders are written leaves each folder complete or absent, and --resume after a kill at the end finishes
the remaining work without a single training step."""
import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest
import yaml

from qwen_sae_jax import load_sae
from qwen_sae_jax.config import to_dict
from qwen_sae_jax.train import distributed, loop, summary
from qwen_sae_jax.train.step import Trainer
from tests.train.test_processes import _env

SMALL = ("train.total_tokens=768", "checkpoint.every=0", "eval.tokens=512")


def _live_bytes() -> int:
    """Device memory held by reachable arrays: every distinct buffer (device, address) once, so a global array
    and the per-device views jax.live_arrays also lists are not counted twice."""
    gc.collect()
    buffers = {}
    for a in jax.live_arrays():
        if not a.is_deleted():
            for shard in a.addressable_shards:
                buffers[shard.device.id, shard.data.unsafe_buffer_pointer()] = shard.data.nbytes
    return sum(buffers.values())


def test_end_of_run_holds_no_more_than_a_step(make_config, monkeypatch):
    peaks = {"step": 0, "end": 0}
    real_step, real_summary_host, real_host = Trainer.step, summary.to_host, distributed.to_host

    def step(self, *args):
        out = real_step(self, *args)
        peaks["step"] = max(peaks["step"], _live_bytes())
        return out

    def at_end(real):
        def wrapped(tree):
            peaks["end"] = max(peaks["end"], _live_bytes())
            return real(tree)
        return wrapped

    monkeypatch.setattr(Trainer, "step", step)
    monkeypatch.setattr(summary, "to_host", at_end(real_summary_host))       # every evaluation chunk
    monkeypatch.setattr(distributed, "to_host", at_end(real_host))           # every SAE written
    # objects of earlier tests are frozen out of the collector, so each of the ~25 measurements collects only
    # what this run allocated (a full collection per measurement took most of a minute in the whole suite)
    gc.collect()
    gc.freeze()
    try:
        result = loop.train(make_config(*SMALL, "eval.tokens=1024"))
    finally:
        gc.unfreeze()
    assert result.summary and peaks["step"] > 0 and peaks["end"] > 0
    assert peaks["end"] <= peaks["step"], peaks


def _run_killed(config: Path, env: dict, kill_in: str) -> subprocess.CompletedProcess:
    """`qwen-sae train` in a subprocess that SIGKILLs itself: at the 2nd SAE file ("export") or when the
    table starts ("table")."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        import qwen_sae_jax.safetensors_io as io
        from qwen_sae_jax.train import summary
        calls = []
        real_save = io.save_file
        def save_file(tensors, path, **kw):
            calls.append(path)
            if {kill_in!r} == "export" and len(calls) == 2:
                open(path, "wb").write(b"partial")           # half a file, then the kill
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(tensors, path, **kw)
        def evaluate_stream(*args, **kw):
            os.kill(os.getpid(), signal.SIGKILL)
        io.save_file = save_file
        if {kill_in!r} == "table":
            summary.evaluate_stream = evaluate_stream
        from qwen_sae_jax.cli import main
        sys.exit(main(["train", {str(config)!r}]))
    """)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kill_in", ["export", "table"])
def test_kill_at_the_end_then_resume_finishes_without_training(make_config, tmp_path, monkeypatch, capsys,
                                                               kill_in, _compilation_cache):
    cfg = make_config(*SMALL, "hooks=[layers.0,layers.1,layers.0.mlp]")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    killed = _run_killed(config, _env(1, _compilation_cache), kill_in)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_dir = Path(cfg.run_dir)
    saes = run_dir / "saes"
    entries = sorted(p.name for p in saes.iterdir())
    complete = [e for e in entries if not e.startswith(".")]
    for name in complete:                                        # every visible folder is a whole SAE
        load_sae(saes / name)
    assert len(complete) == (1 if kill_in == "export" else 3)
    assert not (run_dir / "summary.json").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("resume after the last step must not train")

    monkeypatch.setattr(Trainer, "step", no_training)
    from qwen_sae_jax.cli import main
    assert main(["train", str(config), "--resume"]) == 0
    assert f"from step {cfg.total_steps}" in capsys.readouterr().err
    assert sorted(p.name for p in saes.iterdir() if not p.name.startswith(".")) == sorted(
        f"{h}__topk" for h in ("layers.0", "layers.1", "layers.0.mlp"))
    assert not [p for p in saes.iterdir() if p.name.startswith(".")]     # no half-written folder left behind
    table = json.loads((run_dir / "summary.json").read_text())
    assert table["steps"] == cfg.total_steps and len(table["saes"]) == 3
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == cfg.total_steps
    assert os.path.getsize(saes / "layers.1__topk" / "sae.safetensors") > 1000
