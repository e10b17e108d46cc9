"""The SFT step: reply-token CE against numpy; the same steps on 1 device and on a 4 x 2 mesh of forced CPU
devices (moments sharded like their parameters); gradient checkpointing changes nothing but memory; bf16 runs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.posttrain.config import SFTDataConfig, SFTOptimConfig
from qwen_sae_jax.posttrain.data import build_dataset
from qwen_sae_jax.posttrain.step import Batch, make_loss, make_optimizer, make_step, reply_ce, state_shardings
from qwen_sae_jax.train.config import MeshConfig
from qwen_sae_jax.train.mesh import make_mesh


def test_reply_ce_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 11)).astype(np.float32)
    ids = rng.integers(0, 11, size=(2, 6))
    reply = rng.random((2, 6)) < 0.5
    reply[0, 1] = True
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    terms = [-logp[b, t - 1, ids[b, t]] for b in range(2) for t in range(1, 6) if reply[b, t]]
    got, n = reply_ce(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(reply))
    assert int(n) == len(terms)
    np.testing.assert_allclose(float(got), np.mean(terms), rtol=1e-5)


@pytest.fixture(scope="module")
def data(tiny_model, chat_file):
    from transformers import AutoTokenizer
    return build_dataset(AutoTokenizer.from_pretrained(tiny_model), SFTDataConfig(files=[chat_file], max_len=48), 0)


def run_steps(tiny_model, data, mesh_cfg, steps=3, remat="none", dtype="float32"):
    from qwen_sae_jax.lm import load_model
    mesh = make_mesh(mesh_cfg)
    lm = load_model(tiny_model, dtype=dtype, mesh=mesh)
    opt = make_optimizer(SFTOptimConfig(lr=1e-3, warmup_steps=1), steps)
    param_sh, opt_sh = state_shardings(lm.params, opt, mesh)
    step = make_step(make_loss(lm, remat=remat), opt, param_sh, opt_sh, mesh)
    params, opt_state = lm.params, jax.jit(opt.init, out_shardings=opt_sh)(lm.params)
    losses = []
    for s in range(steps):
        b = data.batch(s, 8)
        params, opt_state, m = step(params, opt_state, Batch(b["ids"], b["mask"], b["reply"], b["language"]), ())
        losses.append(float(m["loss"]))
    return losses, params, opt_state


@pytest.fixture(scope="module")
def one_device(tiny_model, data):
    return run_steps(tiny_model, data, MeshConfig(data=1, model=1))


def test_one_device_and_a_4x2_mesh_agree(tiny_model, data, one_device):
    losses1, params1, _ = one_device
    losses8, params8, opt8 = run_steps(tiny_model, data, MeshConfig(data=4, model=2))
    np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
    assert losses1[-1] < losses1[0]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6),
                 params8, params1)
    q = params8["model"]["layers_0"]["self_attn"]["q_proj"]["kernel"]
    assert len(q.sharding.device_set) == 8 and q.sharding.spec != jax.sharding.PartitionSpec()
    mu = opt8[1][0].mu["model"]["layers_0"]["self_attn"]["q_proj"]["kernel"]      # chain(clip, adamw)
    assert mu.sharding == q.sharding


def test_gradient_checkpointing_changes_nothing(tiny_model, data, one_device):
    got, _, _ = run_steps(tiny_model, data, MeshConfig(data=1, model=1), remat="full")   # recompute everything
    np.testing.assert_allclose(got, one_device[0], rtol=1e-5)


def test_bfloat16_compute(tiny_model, data, one_device):
    want = one_device[0]
    got, params, _ = run_steps(tiny_model, data, MeshConfig(data=1, model=1), dtype="bfloat16")
    assert jax.tree.leaves(params)[0].dtype == jnp.bfloat16
    np.testing.assert_allclose(got, want, rtol=3e-2)


@pytest.mark.slow
def test_qwen3_5_hybrid_model_fine_tunes_on_a_mesh(tmp_path):
    """Any family load_model reads: a tiny random Qwen3.5 (Gated DeltaNet + full attention) on a 2 x 2 mesh."""
    from qwen_sae_jax.lm import load_model
    from tests.models.qwen3_5.hf_reference import build_hf

    _, path = build_hf(tmp_path)
    mesh = make_mesh(MeshConfig(data=2, model=2))
    lm = load_model(str(path), mesh=mesh)
    opt = make_optimizer(SFTOptimConfig(lr=3e-3, warmup_steps=0, decay="constant"), 4)
    param_sh, opt_sh = state_shardings(lm.params, opt, mesh)
    step = make_step(make_loss(lm), opt, param_sh, opt_sh, mesh)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, lm.config.vocab_size, size=(4, 16)).astype(np.int32)
    batch = Batch(ids, np.ones_like(ids), np.ones(ids.shape, bool), np.zeros(4, np.int32))
    params, opt_state = lm.params, jax.jit(opt.init, out_shardings=opt_sh)(lm.params)
    losses = []
    for _ in range(4):
        params, opt_state, m = step(params, opt_state, batch, ())
        losses.append(float(m["loss"]))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(param_sh)):
        assert p.sharding == s
