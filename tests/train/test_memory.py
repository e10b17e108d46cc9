"""The memory plan (train/memory.py): its array parts equal the real arrays' per-device bytes on an 8-device
mesh, its temporaries are close to XLA's figure for the real sharded step, presets are planned without
weights, and `qwen-sae train` refuses a run that does not fit."""
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from qwen_sae_jax.cli import main
from qwen_sae_jax.config import load_config
from qwen_sae_jax.data import buffer as mixing
from qwen_sae_jax.lm import TINY_DIR, load_model
from qwen_sae_jax.models.registry import read_config
from qwen_sae_jax.train.config import TrainConfig
from qwen_sae_jax.train.memory import largest_fitting, plan_memory
from qwen_sae_jax.train.mesh import make_mesh
from qwen_sae_jax.train.plan import make_plan
from qwen_sae_jax.train.step import Trainer

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
SMALL = ["hooks=[blocks.1.hook_resid_post,blocks.2.hook_resid_post,layers.1.mlp]", "saes.0.expansion_factor=null",
         "saes.0.d_sae=512", "saes.0.k=16", "train.batch_size=256", "buffer.size=2048", "data.batch_size=8",
         "data.ctx_len=32", "mesh.data=4", "mesh.model=2"]


def _device0_bytes(tree) -> int:
    d0 = jax.devices()[0]
    return sum(s.data.nbytes for a in jax.tree.leaves(tree) for s in a.addressable_shards if s.device == d0)


@pytest.fixture(scope="module")
def small():
    cfg = load_config(TrainConfig, TINY, SMALL)
    model_config = read_config(TINY_DIR)
    return cfg, model_config, plan_memory(cfg, model_config, 8, local_devices=8)


def test_array_parts_equal_the_real_arrays_on_8_devices(small):
    cfg, model_config, plan = small
    mesh = make_mesh(cfg.mesh)
    lm = load_model("tiny", mesh=mesh, rules=cfg.mesh.rules)
    assert plan.model_params.bytes == _device0_bytes(lm.params)
    train_plan = make_plan(cfg, model_config.num_hidden_layers, model_config.hidden_size, 2)
    trainer = Trainer(cfg, train_plan, mesh)
    samples = jax.numpy.ones((len(train_plan.hooks), 64, train_plan.d_in))
    state = trainer.init_state(jax.random.key(0), samples)
    assert plan.sae_params.bytes == _device0_bytes([g.sae for g in state])
    assert plan.optimizer.bytes == _device0_bytes([(g.opt_state, g.tokens_since_fired) for g in state])
    H, D, Bt = len(train_plan.hooks), train_plan.d_in, cfg.train.batch_size
    buf = jax.jit(lambda: mixing.init_buffer(H, D, cfg.buffer.size, 8 * 32, Bt, np.float32),
                  out_shardings=mixing.buffer_shardings(mesh))()
    assert plan.buffer.bytes == _device0_bytes(buf)


def test_step_temporaries_are_close_to_the_sharded_step(small):
    """The plan compiles one device's shapes; the real step is an SPMD program over 4 x 2 devices."""
    cfg, model_config, plan = small
    mesh = make_mesh(cfg.mesh)
    train_plan = make_plan(cfg, model_config.num_hidden_layers, model_config.hidden_size, 2)
    trainer = Trainer(cfg, train_plan, mesh)
    state = trainer.abstract_state(64)
    shardings = trainer.shardings(state)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, shardings)
    S = cfg.buffer.size // 2 // cfg.train.batch_size
    ready = jax.ShapeDtypeStruct((len(train_plan.hooks), S, cfg.train.batch_size, train_plan.d_in), np.float32,
                                 sharding=mixing.buffer_shardings(mesh).ready)
    with jax.set_mesh(mesh):
        compiled = jax.jit(trainer._step_fn, donate_argnums=(0,)).lower(
            state, ready, jax.ShapeDtypeStruct((), np.int32)).compile()
    real = compiled.memory_analysis().temp_size_in_bytes
    assert 0.75 <= plan.step.bytes / real <= 1.34, (plan.step.bytes, real)


def test_peaks_and_what_fits(small):
    _, _, plan = small
    assert plan.training_peak >= plan.model_params.bytes + plan.sae_params.bytes + plan.optimizer.bytes
    assert plan.end_peak < plan.training_peak          # optimizer state and buffer are released first
    assert plan.fits(plan.needed()) and not plan.fits(plan.needed() - 1)
    roomy = largest_fitting(plan, 4 * plan.needed())
    assert roomy["buffer.size"] > plan.sizing["buffer_size"] and roomy["SAEs in the largest group"] > 2
    assert roomy["train.batch_size"] >= plan.sizing["batch_size"]
    assert all(v == 0 for v in largest_fitting(plan, plan.model_params.bytes).values())


@pytest.mark.parametrize("preset,model,devices", [("qwen-scope-1.7b", "Qwen3-1.7B", 32),
                                                  ("qwen3-1.7b-all", "Qwen3-1.7B", 32),
                                                  ("qwen-scope-30b-a3b", "Qwen3-30B-A3B", 64)])
def test_presets_are_planned_from_their_config_json(preset, model, devices):
    """Arrays only (no compiles): SAE parameters per device by hand (d_sae over the model axis): W_enc, W_dec,
    b_enc and threshold split, b_dec and act_scale replicated, float32."""
    cfg = load_config(TrainConfig, REPO / "configs" / f"{preset}.yaml")
    model_config = read_config(REPO / "configs" / "models" / f"{model}.json")
    plan = plan_memory(cfg, model_config, devices, temporaries=False, platform="tpu", process_bytes=0)
    D, n_model = model_config.hidden_size, cfg.mesh.model
    n_hooks = make_plan(cfg, model_config.num_hidden_layers, D, n_model).num_saes // len(cfg.saes)
    by_hand = sum(n_hooks * (2 * D * v.d_sae // n_model + 2 * v.d_sae // n_model + D + 1) * 4 for v in cfg.saes)
    assert plan.sae_params.bytes == by_hand
    # Adam moments of the trainable leaves (not threshold / act_scale) + dead-latent counters (int32)
    moments = sum(n_hooks * (2 * (2 * D * v.d_sae // n_model + v.d_sae // n_model + D) + v.d_sae // n_model) * 4
                  for v in cfg.saes)
    assert 0 <= plan.optimizer.bytes - moments <= 64 * n_hooks * len(cfg.saes)   # + a few step counts
    assert plan.needed() == plan.peak                    # not on CPU: host parts apart


def test_train_refuses_a_run_that_does_not_fit(tmp_path, capsys):
    code = main(["train", str(TINY), f"run_dir={tmp_path / 'run'}", "--device-memory", "20MB"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "more than the 0.02 GB available" in err[0]
    assert re.search(r"the biggest part is the (SAE parameters|optimizer state|mixing buffer|step temporaries) \(",
                     err[0])
    assert "--ignore-memory-plan" in err[0] and not (tmp_path / "run").exists()


def test_plan_cli_prints_every_part(capsys):
    code = main(["train", str(TINY), *SMALL, "mesh.data=1", "mesh.model=1", "--plan", "--devices", "1",
                 "--device-memory", "64GiB"])
    out = capsys.readouterr().out
    assert code == 0
    for part in ("model parameters", "SAE parameters", "optimizer state", "mixing buffer", "fill temporaries",
                 "step temporaries", "training peak", "end-of-run peak", "checkpoint staging", "largest that fits"):
        assert part in out
    assert "of 68.719 GB per device (--device-memory): fits" in out
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(TINY), "--plan", "--device-memory", "lots"])
    assert exit_.value.code == 2 and "expected a size like 16GB" in capsys.readouterr().err
