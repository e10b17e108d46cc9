"""The fused encoder+TopK Pallas kernel: interpret-mode parity with lax.top_k on CPU, the whole TopK loss
through it against the dense reference, and lowering for real TPU (Mosaic) and GPU (Triton) hardware at
the Qwen-Scope preset shapes (shape-only tracing, no device needed)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from qwen_sae_jax.sae import SAEConfig, init_sae, sae_loss
from qwen_sae_jax.sae.kernels.topk import fused_encoder_topk

from . import reference


def _check_topk(backend, batch, d_in, d_sae, k, seed, **blocks):
    keys = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(keys[0], (batch, d_in))
    W = jax.random.normal(keys[1], (d_in, d_sae)) / np.sqrt(d_in)
    b = jax.random.normal(keys[2], (d_sae,)) * 0.5 - 0.2
    vals, idx = jax.jit(functools.partial(fused_encoder_topk, k=k, backend=backend, interpret=True, **blocks))(x, W, b)
    ref_vals, ref_idx = lax.top_k(jax.nn.relu(x @ W + b), k)
    assert vals.shape == (batch, k) and idx.shape == (batch, k) and idx.dtype == jnp.int32
    np.testing.assert_allclose(vals, ref_vals, rtol=1e-5, atol=1e-6)
    # indices agree wherever the value is non-zero (zeros tie, and ties may resolve differently)
    np.testing.assert_array_equal(jnp.where(ref_vals > 0, idx, -1), jnp.where(ref_vals > 0, ref_idx, -1))
    assert bool(jnp.all((idx >= 0) & (idx < d_sae)))


@pytest.mark.parametrize("backend", ["tpu", "triton"])
@pytest.mark.parametrize(
    "batch, d_in, d_sae, k, blocks",
    [
        (16, 32, 256, 5, {}),  # defaults
        (20, 16, 300, 7, dict(block_n=128)),  # d_sae not a multiple of the tile, B not a multiple of the rows
        (8, 16, 128, 1, {}),  # k = 1
        (8, 16, 64, 64, {}),  # k = d_sae
        (24, 16, 512, 3, dict(block_n=128, num_splits=2)),  # two splits + second-stage top-k
    ],
    ids=["default", "ragged", "k1", "k_eq_d_sae", "splits"],
)
def test_kernel_matches_lax_top_k_in_interpret_mode(backend, batch, d_in, d_sae, k, blocks):
    _check_topk(backend, batch, d_in, d_sae, k, seed=batch + d_sae + k, **blocks)


@pytest.mark.parametrize("implementation", ["pallas", "approx"])
def test_topk_loss_through_other_implementations_matches_dense_reference(implementation):
    cfg = SAEConfig(architecture="topk", d_in=16, d_sae=300, k=6, k_aux=12)
    x_sample = jax.random.normal(jax.random.key(0), (32, 16)) * 2
    sae = init_sae(cfg, jax.random.key(1), x_sample)
    sae = sae.replace(b_enc=0.1 * jax.random.normal(jax.random.key(2), (300,)))
    x = jax.random.normal(jax.random.key(3), (12, 16)) * 2
    dead = jax.random.uniform(jax.random.key(4), (300,)) < 0.5
    (loss, terms), grads = jax.jit(jax.value_and_grad(
        lambda s: sae_loss(s, x, dead_mask=dead, implementation=implementation), has_aux=True))(sae)
    params = {n: getattr(sae, n) for n in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "act_scale")}
    (ref_loss, ref_terms), ref_grads = jax.value_and_grad(lambda p: reference.topk(p, x, cfg, dead),
                                                          has_aux=True)(params)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-4)
    np.testing.assert_allclose(terms.aux, ref_terms["aux"], rtol=1e-4)
    assert float(terms.aux) > 0
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        scale = float(jnp.max(jnp.abs(ref_grads[name])))
        np.testing.assert_allclose(getattr(grads, name), ref_grads[name], rtol=1e-4, atol=1e-4 * scale, err_msg=name)


# --------------------------------------------------------------------------------------------------
# lowering for hardware CI does not have
# --------------------------------------------------------------------------------------------------
PRESETS = [(2048, 32768, 50), (4096, 65536, 100)]
PLATFORMS = [("tpu", "tpu", "tpu_custom_call"), ("triton", "cuda", "__gpu$xla.gpu.triton")]


@pytest.mark.parametrize("backend, platform, marker", PLATFORMS, ids=[p[1] for p in PLATFORMS])
@pytest.mark.parametrize("d_in, d_sae, k", PRESETS, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_kernel_lowers_for_hardware_at_preset_shapes(backend, platform, marker, d_in, d_sae, k, dtype):
    fn = jax.jit(functools.partial(fused_encoder_topk, k=k, backend=backend, interpret=False))
    args = (jax.ShapeDtypeStruct((1024, d_in), dtype), jax.ShapeDtypeStruct((d_in, d_sae), dtype),
            jax.ShapeDtypeStruct((d_sae,), dtype))
    text = fn.trace(*args).lower(lowering_platforms=(platform,)).as_text()
    assert marker in text
    assert f"1024x{d_sae}" not in text  # the dense [B, d_sae] pre-activation matrix never appears


@pytest.mark.parametrize("backend, platform, marker", PLATFORMS, ids=[p[1] for p in PLATFORMS])
def test_full_training_gradient_lowers_with_the_kernel(backend, platform, marker, monkeypatch):
    """The whole TopK loss + sparse backward, with the kernel forced to the target's lowering, exports."""
    from qwen_sae_jax.sae.kernels import topk as kernel_module

    monkeypatch.setattr(kernel_module, "default_backend", lambda: (backend, False))
    cfg = SAEConfig(architecture="topk", d_in=2048, d_sae=32768, k=50)
    abstract_sae = jax.eval_shape(lambda key: init_sae(cfg, key), jax.random.key(0))
    x = jax.ShapeDtypeStruct((1024, 2048), jnp.float32)
    dead = jax.ShapeDtypeStruct((32768,), jnp.bool_)
    grad_fn = jax.jit(jax.grad(lambda s, x, d: sae_loss(s, x, dead_mask=d, implementation="pallas")[0]))
    exported = jax.export.export(grad_fn, platforms=[platform], disabled_checks=[
        jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(abstract_sae, x, dead)
    text = exported.mlir_module()
    assert marker in text and exported.platforms == (platform,)
    assert "1024x32768" not in text  # no dense [B, d_sae] matrix anywhere in forward or backward


@pytest.mark.parametrize("backend, platform, marker", PLATFORMS, ids=[p[1] for p in PLATFORMS])
def test_model_sharded_kernel_lowers_for_hardware(backend, platform, marker, monkeypatch):
    """The per-'model'-shard form (kernels/sharded.py) at a Qwen-Scope width split over 2 x 4 devices lowers
    for the target: one kernel per shard on [d_in, d_sae / 4] columns, candidates all-gathered."""
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (forced) CPU devices")
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from qwen_sae_jax.sae.kernels import topk as kernel_module
    from qwen_sae_jax.sae.select import select_topk

    monkeypatch.setattr(kernel_module, "default_backend", lambda: (backend, False))
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
    d_in, d_sae, k = 2048, 32768, 50
    args = (jax.ShapeDtypeStruct((1024, d_in), jnp.float32, sharding=NamedSharding(mesh, P("data", None))),
            jax.ShapeDtypeStruct((d_in, d_sae), jnp.float32, sharding=NamedSharding(mesh, P(None, "model"))),
            jax.ShapeDtypeStruct((d_sae,), jnp.float32, sharding=NamedSharding(mesh, P("model"))))
    fn = jax.jit(lambda x, w, b: select_topk(x, w, b, k, "pallas")[:2])
    with jax.set_mesh(mesh):
        text = fn.trace(*args).lower(lowering_platforms=(platform,)).as_text()
    assert marker in text and "all_gather" in text
    assert f"{d_in}x{d_sae // 4}x" in text.replace("tensor<", "")  # the kernel sees one shard's columns
    assert "1024x32768" not in text and "512x32768" not in text  # no dense pre-activations
