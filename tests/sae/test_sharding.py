"""The TopK loss and its sparse gradients under a (data, model) mesh of 8 CPU devices (batch sharded over
'data', latents over 'model') give the same numbers as on one device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

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
