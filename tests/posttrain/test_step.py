"""The SFT step: reply-token CE against numpy; the same steps on 1 device and on a 4 x 2 mesh of forced CPU
devices (moments sharded like their parameters); gradient checkpointing, whole-forward or per decoder layer (SFT
and SASFT, Qwen3 and Qwen3.5), changes nothing but memory; bf16 runs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.posttrain.config import SFTDataConfig, SFTOptimConfig
from qwen_sae_jax.posttrain.data import build_dataset
from qwen_sae_jax.posttrain.sasft import LanguageProbe
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


@pytest.mark.parametrize("remat", ["full", "layers"])   # recompute everything / each decoder layer
def test_gradient_checkpointing_changes_nothing(tiny_model, data, one_device, remat):
    got, _, _ = run_steps(tiny_model, data, MeshConfig(data=1, model=1), remat=remat)
    np.testing.assert_allclose(got, one_device[0], rtol=1e-5)


@pytest.fixture(scope="module", params=["qwen3", "qwen3_5"])
def family_lm(request, tiny_model, tmp_path_factory):
    """The tiny Qwen3 of these tests, or the tiny hybrid Qwen3.5 of the model tests (Gated DeltaNet layer 0,
    full-attention layer 1), float32."""
    from qwen_sae_jax.lm import load_model
    if request.param == "qwen3":
        return load_model(tiny_model)
    from tests.models.qwen3_5.hf_reference import build_hf
    return load_model(build_hf(tmp_path_factory.mktemp("qwen3_5"))[1])


def _probe(hook: str, d: int, seed: int) -> LanguageProbe:
    rng = np.random.default_rng(seed)
    F = 6
    return LanguageProbe(W=jnp.asarray(rng.normal(size=(d, F)), jnp.float32), b=jnp.asarray(rng.normal(size=F),
                         jnp.float32), lang=jnp.asarray(np.arange(F) % 2, jnp.int32),
                         tau=jnp.asarray(rng.normal(size=(F, 2)) - 1.0, jnp.float32), hook=hook)


def test_per_layer_remat_gives_the_same_sft_and_sasft_losses_and_gradients(family_lm):
    """``remat=layers`` against ``none`` on both families: the SFT loss, and a SASFT loss reading activations
    captured inside checkpointed layers (layer 0's token mixer: Gated DeltaNet on Qwen3.5) and at a layer output,
    give the same value, terms and parameter gradients (float32); the gradient checkpoints each decoder layer
    and keeps far fewer residual bytes."""
    from tests.models.remat_checks import checkpoint_equations, residual_bytes

    lm = family_lm
    rng = np.random.default_rng(1)
    ids = rng.integers(0, lm.config.vocab_size, size=(4, 24)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :4] = 0                                                   # a left-padded row
    reply = np.zeros(ids.shape, bool)
    reply[:, 10:] = True
    batch = Batch(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(reply), jnp.asarray([0, 1, 1, 0], jnp.int32))
    hooks = lm.resolve_hooks(["blocks.0.hook_attn_out", "layers.1"])
    sasft = tuple(_probe(h, lm.config.hidden_size, i) for i, h in enumerate(hooks))
    grads = {}
    for probes, coefficient in (((), 0.0), (sasft, 0.5)):
        def run(remat):
            loss = make_loss(lm, probes, coefficient, remat=remat)
            return jax.jit(jax.value_and_grad(loss, has_aux=True))(lm.params, batch, probes)
        (want, want_terms), want_grad = run("none")
        (got, got_terms), got_grad = run("layers")
        np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
        for k in want_terms:
            np.testing.assert_allclose(float(got_terms[k]), float(want_terms[k]), rtol=1e-6, err_msg=k)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got_grad, want_grad)
        grads[bool(probes)] = got_grad
    assert float(want_terms["sasft"]) > 0        # the SASFT term is live, and its gradient reaches layer 0
    layer0 = lambda g: np.asarray(g["model"]["layers_0"]["input_layernorm"]["weight"])  # noqa: E731
    assert np.abs(layer0(grads[True]) - layer0(grads[False])).max() > 1e-4 * np.abs(layer0(grads[False])).max()

    def value(remat):
        return lambda p: make_loss(lm, sasft, 0.5, remat=remat)(p, batch, sasft)[0]
    assert checkpoint_equations(jax.make_jaxpr(jax.grad(value("layers")))(lm.params)) == lm.config.num_hidden_layers
    assert checkpoint_equations(jax.make_jaxpr(jax.grad(value("none")))(lm.params)) == 0
    assert residual_bytes(value("layers"), lm.params) < 0.5 * residual_bytes(value("none"), lm.params)


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
