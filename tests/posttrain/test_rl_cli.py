"""`qwen-sae rl` end to end on the tiny random model: --help lists every key; a run SIGKILLed between
checkpoints and resumed through the CLI ends with bitwise-identical parameters; the rollout's log-probabilities and
SAE penalty equal a plain forward pass's; a run with the SAE term logs reward = -(c_rep rep + c_sae sae) to
metrics.jsonl and TensorBoard and exports a loadable model; bad input is one line."""
import json
import os
import re
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
from qwen_sae_jax.posttrain.rl_config import RLConfig
from tests.conftest import with_device_count


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rl-prompts") / "prompts.jsonl"
    prompts = ["the cat sat", "print the value", "seven quick foxes", "lazy dogs near the river bank", "猫 狗",
               "def return import", "a mat while", "index list dict"]
    path.write_text("".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in prompts))
    return str(path)


def write_config(tmp_path: Path, tiny_model, prompts_file, run: str, **extra) -> Path:
    cfg = {"run_dir": str(tmp_path / run), "model": {"name": tiny_model},
           "prompts": {"files": [prompts_file], "max_prompt_len": 24},
           "rollout": {"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 8, "temperature": 1.0},
           "reward": {"repetition": {"n": 1, "unit": "token"}},
           "grpo": {"updates_per_rollout": 2}, "train": {"steps": 8}, "optim": {"lr": 1e-2, "warmup_steps": 1},
           "log": {"every": 1, "progress": "lines"}, "checkpoint": {"every": 3, "async_save": True},
           "mesh": {"data": 1}, **extra}
    path = tmp_path / f"{run}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_help_lists_every_key(capsys):
    with pytest.raises(SystemExit):
        main(["rl", "--help"])
    out = capsys.readouterr().out
    for field in describe_fields(RLConfig):
        assert f"  {field.key}:" in out and field.help, field.key


def _params(hf_dir: Path) -> dict:
    from safetensors.numpy import load_file
    return load_file(str(hf_dir / "model.safetensors"))


def test_sigkill_then_resume_is_bitwise_exact(tiny_model, prompts_file, tmp_path, capsys):
    """A CLI run SIGKILLed after its step-3 checkpoint and resumed with --resume (both in subprocesses of one device)
    ends with the parameters of an uninterrupted run (in this process, meanwhile), bit for bit."""
    import threading

    env = dict(os.environ, XLA_FLAGS=with_device_count(os.environ.get("XLA_FLAGS", ""), 1), JAX_PLATFORMS="cpu")
    cli = lambda cfg, *a: [sys.executable, "-m", "qwen_sae_jax.cli", "rl", str(cfg), *a]  # noqa: E731
    config = write_config(tmp_path, tiny_model, prompts_file, "killed")
    metrics = tmp_path / "killed" / "metrics.jsonl"
    proc = subprocess.Popen(cli(config), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def kill_after_checkpoint_3():
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if (tmp_path / "killed" / "checkpoints" / "3").is_dir() and metrics.exists() and \
                    any(json.loads(line)["step"] >= 4 for line in metrics.read_text().splitlines()):
                break                              # a finished checkpoint (step 3) and steps logged after it
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_after_checkpoint_3)
    killer.start()
    assert main(["rl", str(write_config(tmp_path, tiny_model, prompts_file, "ref"))]) == 0     # the reference
    killer.join()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert 4 <= steps[-1] < 8 and not (tmp_path / "killed" / "hf").exists()
    resumed = subprocess.run(cli(config, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed" in resumed.stderr
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    want_records = [json.loads(line) for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["reward"] for r in records] == [r["reward"] for r in want_records]    # the same rollouts
    want, got = _params(tmp_path / "ref" / "hf"), _params(tmp_path / "killed" / "hf")
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    start = _params(Path(tiny_model))
    assert any(not np.array_equal(start[k], want[k]) for k in want)     # it really trained


def test_rollout_scores_equal_a_plain_forward(tiny_model, sae_dir):
    """old_logp / ref_logp / the SAE penalty of the compiled rollout against lm.logits and lm.capture + numpy."""
    import jax

    from qwen_sae_jax.interop import load_sae
    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.posttrain.rl_config import RolloutConfig
    from qwen_sae_jax.posttrain.rl_grpo import make_rollout
    from qwen_sae_jax.posttrain.rl_reward import build_feature_probes
    from qwen_sae_jax.posttrain.sasft import probe_columns
    from qwen_sae_jax.posttrain.step import make_optimizer, state_shardings
    from qwen_sae_jax.train.config import MeshConfig
    from qwen_sae_jax.train.mesh import make_mesh

    mesh = make_mesh(MeshConfig(data=2, model=1))
    lm = load_model(tiny_model, mesh=mesh)
    sae = load_sae(sae_dir)
    probes = build_feature_probes(lm, {"s": sae}, [("layers.1", 3), ("blocks.1.hook_resid_post", 9)])
    assert [p.hook for p in probes] == ["layers.1"] and probes[0].W.shape == (64, 2)
    param_sh, _ = state_shardings(lm.params, make_optimizer(RLConfig().optim, 1), mesh)
    ids, mask = lm.tokenize(["the cat sat", "print the value", "lazy dogs", "a"], padding_side="left")
    P = ids.shape[1]
    fn = make_rollout(lm, RolloutConfig(group_size=2, prompts_per_step=2, max_new_tokens=6), "mean", probes, P,
                      param_sh, mesh)
    out = jax.device_get(fn(lm.params, lm.params, probes, ids, mask, jax.random.key(5)))
    full, fmask, resp = out["ids"], out["mask"], out["response"]
    assert resp.sum(1).tolist() == out["lengths"].tolist() and (out["lengths"] >= 1).all()
    logp = np.asarray(jax.nn.log_softmax(np.asarray(lm.logits(full, fmask), np.float64), -1))
    want = np.take_along_axis(logp[:, P - 1:-1], full[:, P:, None], -1)[..., 0]
    np.testing.assert_allclose(np.where(resp, out["old_logp"], 0), np.where(resp, want, 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["ref_logp"], out["old_logp"], rtol=1e-6)           # reference = policy here
    h = np.asarray(lm.capture(full, ["layers.1"], fmask)["layers.1"], np.float64)[:, P:]    # [B, N, D]
    W, b = probe_columns(sae, [3, 9])
    a = np.maximum(h @ W + b, 0).sum(-1)                                                  # TopK SAE: threshold 0
    np.testing.assert_allclose(out["sae"], (a * resp).sum(1) / resp.sum(1), rtol=1e-4)


def test_sae_term_run_logs_and_exports(tiny_model, prompts_file, sae_dir, tmp_path, capsys):
    from qwen_sae_jax.lm import load_model

    features = tmp_path / "features.json"
    features.write_text(json.dumps({"features": [{"hook": "layers.1", "feature": f} for f in (3, 7, 11)]}))
    cfg = write_config(tmp_path, tiny_model, prompts_file, "sae", train={"steps": 2},
                       log={"every": 1, "progress": "lines", "tensorboard": True},
                       reward={"repetition": {"coefficient": 0.5, "n": 1}, "sae": {"coefficient": 0.1,
                               "features": str(features), "saes": [sae_dir]}})
    assert main(["rl", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "SAE penalty on layers.1" in err and "step 2/2 (100%)" in err and "| sae " in err
    records = [json.loads(line) for line in (tmp_path / "sae" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert r["sae"] > 0 and r["kl"] >= -1e-6 and r["response_tokens"] >= 1
        np.testing.assert_allclose(r["reward"], -(0.5 * r["repetition"] + 0.1 * r["sae"]), rtol=1e-5)
    from tensorboardX.proto.event_pb2 import Event

    from tests.train.test_logs import _tfrecords
    (events,) = (tmp_path / "sae" / "tensorboard").glob("events.out.tfevents.*")
    scalars = {(v.tag, e.step): v.simple_value for e in map(Event.FromString, _tfrecords(events))
               for v in e.summary.value}
    for r in records:
        for key in ("reward", "repetition", "sae", "kl"):
            assert scalars[(key, r["step"])] == pytest.approx(r[key], abs=1e-6)
    ids = np.asarray([[5, 80, 90, 100, 7]])
    trained = np.asarray(load_model(str(tmp_path / "sae" / "hf")).logits(ids))
    assert not np.allclose(trained, np.asarray(load_model(tiny_model).logits(ids)))


@pytest.mark.parametrize("override, match", [
    ("rollout.group_size=1", r"rollout.group_size must be >= 2"),
    ("reward.repetition.coefficient=0", r"every reward coefficient is 0"),
    ("reward.sae.features=FEATURES", r"feature 40 of layers.1 is outside its SAE \(d_sae=32\)"),
    ("reward.sae.features=OTHER_HOOK", r"names hook 'layers.0' but no SAE in reward.sae.saes reads it"),
    ("reward.sae.coefficient=1", r"reward.sae.coefficient > 0 needs reward.sae.features"),
    ("grpo.clipeps=0.1", r"unknown config key 'grpo.clipeps'"),
])
def test_bad_input_is_one_line(tiny_model, prompts_file, sae_dir, tmp_path, capsys, override, match):
    (tmp_path / "features.json").write_text(json.dumps({"features": [{"hook": "layers.1", "feature": 40}]}))
    (tmp_path / "other.json").write_text(json.dumps({"features": [{"hook": "layers.0", "feature": 1}]}))
    override = override.replace("FEATURES", str(tmp_path / "features.json")).replace(
        "OTHER_HOOK", str(tmp_path / "other.json"))
    cfg = write_config(tmp_path, tiny_model, prompts_file, "bad")
    extra = [f"reward.sae.saes=[{sae_dir}]"] if "features=" in override else []
    assert main(["rl", str(cfg), override, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("qwen-sae rl: error:"), err
    assert re.search(match, err), err
