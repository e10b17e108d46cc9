"""The TopK loss and its sparse gradients under a (data, model) mesh of 8 CPU devices (batch sharded over
'data', latents over 'model') give the same numbers as on one device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from qwen_sae_jax.sae import SAEConfig, init_sae, sae_loss


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_loss_and_grads_under_a_mesh_match_single_device(arch):
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (forced) CPU devices")
    cfg = SAEConfig(architecture=arch, d_in=16, d_sae=64, k=4 if arch == "topk" else None, k_aux=8)
    x = jax.random.normal(jax.random.key(0), (32, 16)) * 2
    sae = init_sae(cfg, jax.random.key(1), x)
    dead = jnp.arange(64) % 3 == 0
    fn = jax.jit(jax.value_and_grad(lambda s, x: sae_loss(s, x, dead_mask=dead)[0]))
    loss, grads = fn(sae, x)

    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    specs = sae.replace(W_enc=P(None, "model"), b_enc=P("model"), W_dec=P("model", None), b_dec=P(),
                        threshold=P("model"), act_scale=P())
    sharded_sae = jax.tree.map(lambda a, s: jax.device_put(a, NamedSharding(mesh, s)), sae, specs)
    sharded_x = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    loss_m, grads_m = fn(sharded_sae, sharded_x)
    np.testing.assert_allclose(loss_m, loss, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(grads_m), jax.tree.leaves(grads)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_pallas_topk_runs_per_model_shard_and_matches_the_unsharded_loss():
    """implementation="pallas" with the latents split over 'model' (context mesh, as the trainer sets it):
    the kernel runs on each shard's encoder columns and only [B, model * k] candidates are gathered (on
    TPU/GPU the kernel is a custom call XLA could not split); values, indices, loss and gradients equal the
    single-device XLA path."""
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (forced) CPU devices")
    from qwen_sae_jax.sae.select import select_topk

    cfg = SAEConfig(architecture="topk", d_in=16, d_sae=256, k=6, k_aux=8)
    x = jax.random.normal(jax.random.key(0), (32, 16)) * 2
    sae = init_sae(cfg, jax.random.key(1), x)
    sae = sae.replace(b_enc=jax.random.normal(jax.random.key(2), (256,)) * 0.1)
    dead = jnp.arange(256) % 3 == 0
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(
        lambda s, x: sae_loss(s, x, dead_mask=dead, implementation="xla")[0]))(sae, x)
    ref_vals, ref_idx = jax.lax.top_k(jax.nn.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc), 6)

    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    specs = sae.replace(W_enc=P(None, "model"), b_enc=P("model"), W_dec=P("model", None), b_dec=P(),
                        threshold=P("model"), act_scale=P())
    sharded_sae = jax.tree.map(lambda a, s: jax.device_put(a, NamedSharding(mesh, s)), sae, specs)
    sharded_x = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    select = jax.jit(lambda s, x: select_topk(x - s.b_dec, s.W_enc, s.b_enc, 6, "pallas")[:2])
    with jax.set_mesh(mesh):
        vals, idx = select(sharded_sae, sharded_x)
        hlo = select.lower(sharded_sae, sharded_x).compile().as_text()
        loss, grads = jax.jit(jax.value_and_grad(
            lambda s, x: sae_loss(s, x, dead_mask=dead, implementation="pallas")[0]))(sharded_sae, sharded_x)
    np.testing.assert_allclose(vals, ref_vals, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(idx, ref_idx)
    # the per-shard path ran: what crosses devices is each data shard's candidates [32 / 4, 2 * 6]
    gathers = [line for line in hlo.splitlines() if "all-gather(" in line]
    assert gathers and all("[8,12]" in line for line in gathers), gathers
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
